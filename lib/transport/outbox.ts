/**
 * Write coalescing. Each connection has an outbox; what it gets in an event-loop turn is joined
 * into frames of at most {@link MAX_FRAME_BYTES}, one event per line, sent when the turn ends
 * (in a `setImmediate` task, after the turn's I/O). So under load each recipient gets one write
 * per turn; Deno makes one socket write per `send()`, and this turns thousands of writes into a
 * few; a queue that grows past {@link SEND_AT_BYTES} leaves before the turn ends.
 *
 * A quiet server does not wait for the turn's end (see {@link Turns.direct}): when the last turn
 * gave no recipient more than one event, the next event goes to its sockets at once, with all
 * the same run of code sends, and only what follows in the same event-loop iteration waits. At a
 * few hundred messages a second each message is a turn of its own, and the hop to its end only
 * added latency and CPU (bench/RESULTS.md, tenth session); under load the last turn carried
 * several events, and every event waits for its turn's end. (Sending every turn's first event at
 * once, as natter once did, made two or three writes per recipient per turn under moderate load,
 * where one does: docs/ARCHITECTURE.md has the measurements.)
 *
 * After a turn's first broadcast to a room, the members whose queue is the room log's last run
 * follow the room's {@link Cast}: the turn's next broadcasts are appended once, with no work per
 * member (docs/ARCHITECTURE.md, "After a turn's first broadcast").
 *
 * Clients split frames on newlines (docs/PROTOCOL.md), so none of them can tell the difference.
 */

import { clearImmediate, setImmediate } from "node:timers";

/** Largest frame an outbox packs, in UTF-8 bytes; a single event larger than this goes alone. */
export const MAX_FRAME_BYTES = 64 * 1024;

/**
 * A recipient's queue of two events or more that reaches this many bytes leaves at once, not at
 * the turn's end: a turn that brings it more than that (thousands of messages in flight) hands the
 * socket a frame now and then rather than one big burst at the end, which the kernel took slowly
 * (bench/RESULTS.md, seventh session). A single event is never sent early for its size: it waits
 * for the turn's end, however big (unless the server is quiet: see {@link Turns.direct}).
 */
export const SEND_AT_BYTES = 32 * 1024;

/** Where an outbox writes whole frames. */
export type Sink = (frame: string) => void;

/**
 * One stream's queued events this turn (a room's broadcasts, in one lane), in the order they were
 * first queued; a broadcast's event is in it once for all its recipients, which queue it one after
 * another. So a recipient's events are usually one run of this log: its outbox then keeps where
 * the run starts and ends, not a list of its own (measured at fan-out: the per-outbox lists and
 * comparing them were a third of the server's time). Each stream has its own logs, so that busy
 * rooms do not break each other's runs, and each lane (one per format: a broadcast queues its text
 * line and its JSON line for members in turn) its own log, so that both kinds of recipients keep
 * theirs.
 */
interface TurnLog {
  /** What it is the log of (a room), and the flush it belongs to. */
  readonly stream: object;
  readonly flush: number;
  readonly lines: string[];
  /** `sums[i]` is the UTF-8 bytes of `lines[0..i)`: any run's size in one subtraction. */
  readonly sums: number[];
  /** Frames joined from runs of it, by first line: the next outbox with that run reuses them. */
  frames?: Map<number, { end: number; frame: string }>;
  /** The outboxes that follow it (see {@link Cast}). */
  cast?: Cast;
}

/** Appends `event` to a log; returns its index. */
function logEntry(log: TurnLog, event: string, bytes: number): number {
  const { lines, sums } = log;
  lines.push(event);
  sums.push(sums[lines.length - 1]! + bytes);
  return lines.length - 1;
}

/**
 * The turns of one app's outboxes: which have something to send when this turn ends, the turn's
 * logs, and the one task that ends the turn. Each app owns one, so one app's shutdown flushes its
 * own connections and no other's.
 */
export class Turns {
  /**
   * Outboxes with something to flush when this turn ends: an array, not a set (a set of a thousand
   * outboxes, cleared and filled again every turn, was a quarter of a turn's time in-process at 16
   * in flight). An outbox's `dirty` says whether it is on it: one forgotten stays in the array,
   * unmarked, and is passed over.
   */
  #dirty: Outbox[] = [];
  #scheduled = false;
  /** Whether a quiet server sends at once (see {@link direct}). */
  readonly #sendsAtOnce: boolean;
  /**
   * The broadcast that found the server quiet, while its run of code lasts: its stream and its
   * event in each lane (a room's text and JSON lines) leave at once; any other event waits.
   */
  #direct: { stream: object; events: (string | undefined)[] } | undefined;
  /** The last turn gave no outbox more than one event (or it was a run of direct sends). */
  #lastSingle = true;
  /** An outbox got a second event this turn: the turn is a busy one. */
  packed = false;
  /** Direct sends happened in this event-loop iteration: what follows in it waits its turn. */
  #sentThisIteration = false;
  #endDirect = () => {
    this.#direct = undefined;
    this.#sentThisIteration = true;
    setImmediate(this.#endIteration);
  };
  #endIteration = () => {
    this.#sentThisIteration = false;
  };
  // The turn ends in a setImmediate callback: it runs once the event loop has handled this
  // iteration's I/O, every socket's events included. A microtask runs before the other sockets'
  // events (nothing would coalesce); setTimeout waits for a timer tick (~1 ms and more); a
  // MessageChannel message arrives with the next iteration's I/O in an order that varies (the
  // rate swung by a factor of three from run to run with it; bench/RESULTS.md).
  #pending: ReturnType<typeof setImmediate> | undefined;
  /** This turn's logs, by stream and lane. */
  #logs = new Map<object, TurnLog[]>();
  /** Flushes of all outboxes so far: a log of an earlier one is done with. */
  flushes = 0;
  /** `atOnce: false`: every event waits for its turn's end, quiet or not. */
  constructor(options: { atOnce?: boolean } = {}) {
    this.#sendsAtOnce = options.atOnce ?? true;
  }

  /** Whether this turn's flush is scheduled already. */
  get scheduled(): boolean {
    return this.#scheduled;
  }

  /**
   * Whether `event` (broadcast to `stream`, in `lane`) may go to its socket now instead of at the
   * turn's end: nothing is queued anywhere, the last turn gave no outbox more than one event, and
   * nothing went at once earlier in this event-loop iteration. Then that one broadcast goes at once
   * to all its recipients (the same event in each lane, to the same stream), and anything else (the
   * next message, even one another socket brought in the same read) waits for its turn's end.
   */
  direct(event: string, stream: object, lane: number): boolean {
    const run = this.#direct;
    if (run !== undefined) {
      if (run.stream !== stream) return false;
      return (run.events[lane] ??= event) === event;
    }
    if (
      this.#scheduled || !this.#lastSingle || this.#sentThisIteration || !this.#sendsAtOnce
    ) return false;
    this.#direct = { stream, events: [] };
    this.#direct.events[lane] = event;
    queueMicrotask(this.#endDirect);
    return true;
  }

  /** Puts an outbox on this turn's flush list. */
  schedule(outbox: Outbox): void {
    if (outbox.dirty) return;
    outbox.dirty = true;
    this.#dirty.push(outbox);
    this.#endLater();
  }

  /** Takes an outbox off the flush list (its connection is gone). */
  forget(outbox: Outbox): void {
    // It stays in the array, unmarked: the flush passes over it (and over a second entry, should it
    // be scheduled again in this turn).
    outbox.dirty = false;
  }

  /** The log of `stream`'s events in `lane` this turn. */
  logOf(stream: object, lane: number): TurnLog {
    let lanes = this.#logs.get(stream);
    if (lanes === undefined) this.#logs.set(stream, lanes = []);
    return lanes[lane] ??= { stream, flush: this.flushes, lines: [], sums: [0] };
  }

  /** A log that only `owner` queues into, this turn. */
  ownLog(owner: object): TurnLog {
    return { stream: owner, flush: this.flushes, lines: [], sums: [0] };
  }

  /** Flushes every outbox now, in place of the flush scheduled for the turn's end. */
  flushNow(): void {
    if (this.#pending !== undefined) clearImmediate(this.#pending);
    this.#flushAll();
  }

  /** One task per turn, whatever the number of connections written to. */
  #endLater(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#pending = setImmediate(() => this.#flushAll());
  }

  #flushAll(): void {
    this.#pending = undefined;
    const boxes = this.#dirty;
    this.#dirty = [];
    // `scheduled` stays set while flushing: an event queued from a sink (none is, today) waits
    // for the next flush instead of starting a new turn in the middle of this one.
    for (const box of boxes) {
      if (!box.dirty) continue; // forgotten, or met already
      box.dirty = false;
      try {
        box.flush();
      } catch {
        // One failing socket must not keep the others' frames back (its sink closes it).
      }
    }
    this.#scheduled = false;
    this.#lastSingle = !this.packed;
    this.packed = false;
    this.#logs = new Map();
    this.flushes++;
    if (this.#dirty.length > 0) this.#endLater();
  }
}

/** Joins `lines[start..end)` of a log into one frame. */
function join(log: TurnLog, start: number, end: number): string {
  const lines = log.lines;
  return start === 0 && end === lines.length
    ? lines.join("\n")
    : lines.slice(start, end).join("\n");
}

/** Joins a run of a shared log into one frame, once for every outbox that asks. */
function runFrame(log: TurnLog, start: number, end: number): string {
  const frames = log.frames ??= new Map();
  const known = frames.get(start);
  if (known?.end === end) return known.frame;
  const frame = join(log, start, end);
  frames.set(start, { end, frame });
  return frame;
}

/**
 * Where the frame that starts at line `start` of a run ending at `end` ends: as many lines as
 * fit in {@link MAX_FRAME_BYTES} with their newlines, at least one.
 */
function frameEnd(sums: number[], start: number, end: number): number {
  // sums[i] + i grows with i: the last i with sums[i] - sums[start] + (i - start - 1) <= cap.
  const limit = MAX_FRAME_BYTES + sums[start]! + start + 1;
  let low = start + 1;
  let high = end;
  while (low < high) {
    const middle = (low + high + 1) >> 1;
    if (sums[middle]! + middle <= limit) low = middle;
    else high = middle - 1;
  }
  return low;
}

/**
 * The outboxes that follow one stream's log this turn: an event sent through the cast is appended
 * to the log once and is in the run of every follower, with no work per recipient (a room's first
 * broadcast of a turn goes to each member and makes it a follower; see {@link Outbox.follow}). A
 * follower that gets an event of its own (a reply, an error) leaves: its run ends where the log
 * ended, and the cast's later events reach it one by one, as they would an outbox that never
 * followed. A cast lasts one turn; {@link freeze} ends it early (its stream's audience changed),
 * and every follower's run then ends where the log ended.
 */
export class Cast {
  readonly #followers: Outbox[] = [];
  /** Outboxes that followed it and left: they still get its events, one push each. */
  readonly #left: Outbox[] = [];
  /** Outboxes following it now. */
  #following = 0;
  /** Where its followers' runs end once it is frozen; Infinity while it carries events. */
  end = Infinity;
  /** The smallest start of a follower's run: where the largest queue starts. */
  #from = Infinity;

  constructor(readonly turns: Turns, readonly log: TurnLog) {}

  /** It still carries events: it is this turn's and not frozen. */
  get live(): boolean {
    return this.end === Infinity && this.log.flush === this.turns.flushes;
  }

  /** An outbox follows it from line `start` of its log. */
  join(outbox: Outbox, start: number): void {
    this.#followers.push(outbox);
    this.#following++;
    if (start < this.#from) this.#from = start;
  }

  /** A follower stopped following; `stay`: it still gets the cast's events, one by one. */
  leave(outbox: Outbox, stay: boolean): void {
    this.#following--;
    if (stay && this.live) this.#left.push(outbox);
  }

  /** Its followers' runs end here; its events are done with (a new cast takes the stream's). */
  freeze(): void {
    if (this.end === Infinity) this.end = this.log.lines.length;
  }

  /**
   * Queues an event (its UTF-8 length is `bytes`) for every outbox in the cast at once; returns
   * how many got it. Queues that reach {@link SEND_AT_BYTES} leave now, as an outbox's would.
   */
  send(event: string, bytes: number): number {
    const log = this.log;
    const end = logEntry(log, event, bytes) + 1;
    // A follower has had an event this turn already: a busy turn (a pushed one says so itself).
    if (this.#following > 0) this.turns.packed = true;
    let sent = this.#following;
    for (const outbox of this.#left) {
      if (outbox.cast !== this) continue; // gone, or taken out of the cast by its owner
      outbox.push(event, bytes, log.stream);
      sent++;
    }
    if (this.#following > 0 && log.sums[end]! - log.sums[this.#from]! >= SEND_AT_BYTES) {
      for (const outbox of this.#followers) outbox.flushFollowing(this, end);
      this.#from = end;
    }
    return sent;
  }
}

/** One connection's outbound queue. */
export class Outbox {
  /**
   * Its queued events: `#runLog.lines[#start..#end)`, a run of a stream's log, or of a log of its
   * own (whose stream is this outbox) once they stopped being one run of a shared one. While it
   * follows a {@link Cast}, its run ends where the log ends (or where the cast froze).
   */
  #runLog: TurnLog | undefined;
  #start = 0;
  #end = 0;
  #bytes = 0;
  /** The cast it is in this turn: following it, or left and getting its events one by one. */
  #cast: Cast | undefined;
  #following = false;
  /** Already in this turn's flush list. */
  dirty = false;

  /**
   * `turns`: the app's turns, whose end sends what is queued. `lane`: outboxes that get the same
   * kind of frames (one lane per format) share a log of the turn's events; see {@link TurnLog}.
   */
  constructor(readonly turns: Turns, readonly sink: Sink, readonly lane = 0) {}

  /** UTF-8 bytes queued and not yet handed to the socket. */
  get queued(): number {
    if (!this.#following) return this.#bytes;
    const sums = this.#runLog!.sums;
    return sums[this.#runEnd()]! - sums[this.#start]!;
  }

  /** The cast it is in (see {@link Cast}), if any. */
  get cast(): Cast | undefined {
    return this.#cast;
  }

  /** Where its run ends: the log's end (or the cast's, frozen) while it follows one. */
  #runEnd(): number {
    return this.#following ? Math.min(this.#cast!.end, this.#runLog!.lines.length) : this.#end;
  }

  /**
   * Follows `stream`'s broadcast for the rest of the turn: its run is the last of that stream's
   * log, and every event sent through the log's {@link Cast} joins it with no call here. Returns the
   * cast, or undefined when its queue is not such a run (nothing queued, a log of its own, an
   * event the others did not get) or it follows already.
   */
  follow(stream: object): Cast | undefined {
    const log = this.#runLog;
    if (
      log === undefined || this.#following || log.stream !== stream ||
      log.flush !== this.turns.flushes || this.#end !== log.lines.length
    ) return undefined;
    let cast = log.cast;
    if (cast === undefined || !cast.live) cast = log.cast = new Cast(this.turns, log);
    this.#cast = cast;
    this.#following = true;
    cast.join(this, this.#start);
    return cast;
  }

  /**
   * Leaves its cast for good: what it has stays queued, and the cast's later events do not reach
   * it (its owner sends them one by one, or not at all).
   */
  unfollow(): void {
    this.#settle(false);
    this.#cast = undefined;
  }

  /** Stops following: its run ends where it ends now. `stay`: it still gets the cast's events. */
  #settle(stay: boolean): void {
    if (!this.#following) return;
    const end = this.#runEnd();
    const sums = this.#runLog!.sums;
    this.#end = end;
    this.#bytes = sums[end]! - sums[this.#start]!;
    this.#following = false;
    this.#cast!.leave(this, stay);
  }

  /** Sends its run up to line `end` of its cast's log now, and follows on from there. */
  flushFollowing(cast: Cast, end: number): void {
    if (this.#cast !== cast || !this.#following) return;
    const log = this.#runLog!;
    this.#send(log, this.#start, end);
    this.#start = end;
  }

  /**
   * Queues an event for the turn's end. `bytes` is its UTF-8 length, computed once per broadcast
   * by the caller. `stream`: what it was broadcast to (a room), whose recipients share a log of the
   * turn's events; without one, the event is this outbox's alone.
   */
  push(event: string, bytes: number, stream: object = this): void {
    if (this.#following) this.#settle(true); // an event of its own: it leaves its cast
    const turns = this.turns;
    const log = this.#runLog;
    if (log === undefined) {
      // On a quiet server, nothing to wait for: it goes now (nothing of this outbox's is queued).
      if (turns.direct(event, stream, this.lane)) return this.sink(event);
      // A run of one: the stream's last entry if that is this event (the broadcast's earlier
      // recipients queued it), else a new one.
      const shared = stream === this ? turns.ownLog(this) : turns.logOf(stream, this.lane);
      const last = shared.lines.length - 1;
      this.#start = last >= 0 && shared.lines[last] === event
        ? last
        : logEntry(shared, event, bytes);
      this.#end = this.#start + 1;
      this.#runLog = shared;
      this.#bytes += bytes;
      return turns.schedule(this); // one event alone waits for the turn's end, however big
    }
    turns.packed = true; // a second event for one socket in one turn: a busy turn
    if (log.stream === this) {
      this.#end = logEntry(log, event, bytes) + 1; // its own log takes anything
    } else if (log.stream === stream && log.flush === turns.flushes) {
      // The stream's log of this turn (one per stream and lane; this outbox's lane is fixed).
      if (this.#end === log.lines.length) {
        // Its run ends the log: the event goes after it, as a new entry.
        this.#end = logEntry(log, event, bytes) + 1;
      } else if (this.#end === log.lines.length - 1 && log.lines[this.#end] === event) {
        // The entry just after its run is this event: the broadcast queued it for others first.
        this.#end++;
      } else this.#ownFrom(log, event, bytes);
    } else this.#ownFrom(log, event, bytes);
    if ((this.#bytes += bytes) >= SEND_AT_BYTES) this.flush();
  }

  /**
   * Its events are no longer one run of one shared log (an event of another stream, or one that
   * others got and it did not, came between): they go on in a log of its own.
   */
  #ownFrom(log: TurnLog, event: string, bytes: number): void {
    const own = this.turns.ownLog(this);
    for (let i = this.#start; i < this.#end; i++) {
      logEntry(own, log.lines[i]!, log.sums[i + 1]! - log.sums[i]!);
    }
    logEntry(own, event, bytes);
    this.#runLog = own;
    this.#start = 0;
    this.#end = own.lines.length;
  }

  /** Sends everything queued now, in frames of at most {@link MAX_FRAME_BYTES}. */
  flush(): void {
    const log = this.#runLog;
    if (log === undefined) return;
    const from = this.#start;
    const to = this.#runEnd();
    if (this.#following) {
      // Sent early (its connection closes, the turn ends): it leaves its cast. One that left it
      // already stays, and gets its next events one by one.
      this.#cast!.leave(this, false);
      this.#following = false;
      this.#cast = undefined;
    }
    this.#runLog = undefined;
    this.#bytes = 0;
    this.#send(log, from, to);
  }

  /** Sends `lines[from..to)` of a log in frames; cut at the same lines for every outbox. */
  #send(log: TurnLog, from: number, to: number): void {
    // Frames cut at the same lines for every outbox with this run, so that they are joined once.
    for (let start = from; start < to;) {
      const end = frameEnd(log.sums, start, to);
      this.sink(log.stream === this ? join(log, start, end) : runFrame(log, start, end));
      start = end;
    }
  }

  /** Forgets what is queued (the connection is gone). */
  discard(): void {
    if (this.#following) this.#cast!.leave(this, false);
    this.#following = false;
    this.#cast = undefined;
    this.#runLog = undefined;
    this.#bytes = 0;
    this.turns.forget(this);
  }
}
