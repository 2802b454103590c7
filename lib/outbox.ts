/**
 * Write coalescing. Each connection has an outbox; the first event in an event-loop turn
 * leaves at once (a quiet server keeps its latency) unless the connection is busy: it had
 * queued events in the turn just before, with no pause of the server in between. Then one
 * write per turn beats two (+27 % deliveries at 100 receivers, +44 % at 1000, measured with
 * bench/fanout.ts). The rest of a turn's events are joined into frames of at most
 * {@link MAX_FRAME_BYTES}, one event per line, sent when the turn ends. Deno makes one socket
 * write per `send()`, so under load this turns thousands of writes into a few.
 *
 * Clients split frames on newlines (docs/PROTOCOL.md), so none of them can tell the difference.
 */

import { clearImmediate, setImmediate } from "node:timers";

/** Largest frame an outbox packs, in UTF-8 bytes; a single event larger than this goes alone. */
export const MAX_FRAME_BYTES = 64 * 1024;

/** Where an outbox writes whole frames. */
export type Sink = (frame: string) => void;

/** Outboxes with something to flush when this turn ends. */
const dirty = new Set<Outbox>();
let scheduled = false;
/** Turns so far: each flush of all outboxes, and each pause of the server, is one. */
let turn = 0;
/** When the last flush of all outboxes ended. */
let lastFlushEnd = 0;
/**
 * A server that did nothing for this long was idle: every connection is quiet again. Back to
 * back turns under load follow each other within microseconds.
 */
const PAUSE_MS = 1;

/** The first event of a turn: a pause before it makes every connection quiet again. */
function beginTurn(): void {
  if (performance.now() - lastFlushEnd > PAUSE_MS) turn++;
}

// The turn ends in a setImmediate callback: it runs once the event loop has handled this
// iteration's I/O, every socket's events included. A microtask runs before the other sockets'
// events (nothing would coalesce); setTimeout waits for a timer tick (~1 ms and more). A
// MessageChannel message, the first choice, arrives with the next iteration's I/O in an order
// that varies: 100 receivers swung between 1.3M and 4.1M deliveries/s with it, and gave 4.9M to
// 6.1M with setImmediate (1000 receivers: 2.9M to 4.1M, and 3.1M to 4.2M; bench/fanout.ts).
let pending: ReturnType<typeof setImmediate> | undefined;

function schedule(outbox: Outbox): void {
  if (outbox.dirty) return;
  outbox.dirty = true;
  dirty.add(outbox);
  endTurnLater();
}

/**
 * Makes sure this turn ends with a flush. One task per turn, whatever the number of
 * connections written to: a lone message to 100 quiet connections leaves as 100 direct writes
 * and costs no per-connection bookkeeping at the turn's end.
 */
function endTurnLater(): void {
  if (scheduled) return;
  scheduled = true;
  pending = setImmediate(flushAll);
}

/** Flushes every outbox now, in place of the flush scheduled for the turn's end. */
export function stopFlushing(): void {
  if (pending !== undefined) clearImmediate(pending);
  flushAll();
}

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
}

/** This turn's logs, by stream and lane. */
let logs = new Map<object, TurnLog[]>();
/** Flushes of all outboxes so far: a log of an earlier one is done with. */
let flushes = 0;

function logOf(stream: object, lane: number): TurnLog {
  let lanes = logs.get(stream);
  if (lanes === undefined) logs.set(stream, lanes = []);
  return lanes[lane] ??= { stream, flush: flushes, lines: [], sums: [0] };
}

/** A log that only `owner` queues into, this turn. */
function ownLog(owner: object): TurnLog {
  return { stream: owner, flush: flushes, lines: [], sums: [0] };
}

/** Appends `event` to a log; returns its index. */
function logEntry(log: TurnLog, event: string, bytes: number): number {
  const { lines, sums } = log;
  lines.push(event);
  sums.push(sums[lines.length - 1]! + bytes);
  return lines.length - 1;
}

function flushAll(): void {
  pending = undefined;
  turn++;
  const boxes = [...dirty];
  dirty.clear();
  // `scheduled` stays set while flushing: an event queued from a sink (none is, today) waits for
  // the next flush instead of starting a new turn in the middle of this one.
  for (const box of boxes) {
    box.dirty = false;
    try {
      box.flush();
    } catch {
      // One failing socket must not keep the others' frames back (its sink closes it).
    }
  }
  scheduled = false;
  logs = new Map();
  flushes++;
  lastFlushEnd = performance.now();
  if (dirty.size > 0) endTurnLater();
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

/** One connection's outbound queue. */
export class Outbox {
  /**
   * Its queued events: `#runLog.lines[#start..#end)`, a run of a stream's log, or of a log of its
   * own (whose stream is this outbox) once they stopped being one run of a shared one.
   */
  #runLog: TurnLog | undefined;
  #start = 0;
  #end = 0;
  #bytes = 0;
  /** The turn in which a frame last left directly: the rest of that turn waits for its end. */
  #sentIn = -1;
  /**
   * The turn in which queued events last left. If that was the turn just before, the
   * connection is busy, so even the first event of this turn waits for the turn's end (one
   * write per turn instead of two). A rule on the last flush alone ("more than one event")
   * flapped under load: turns of one message between turns of hundreds made every other
   * turn's first event a write of its own.
   */
  #busyIn = -1;
  /** Already in this turn's flush list. */
  dirty = false;

  /**
   * `lane`: outboxes that get the same kind of frames (one lane per format) share a log of the
   * turn's events; see {@link TurnLog}.
   */
  constructor(readonly sink: Sink, readonly lane = 0) {}

  /** UTF-8 bytes queued and not yet handed to the socket. */
  get queued(): number {
    return this.#bytes;
  }

  /**
   * Sends an event at once if it is the first of this turn, else queues it for the turn's end.
   * `bytes` is its UTF-8 length, computed once per broadcast by the caller. `stream`: what it was
   * broadcast to (a room), whose recipients share a log of the turn's events; without one, the
   * event is this outbox's alone.
   */
  push(event: string, bytes: number, stream: object = this): void {
    if (!scheduled) beginTurn();
    const log = this.#runLog;
    if (log === undefined) {
      if (this.#sentIn !== turn && this.#busyIn !== turn) {
        this.#sentIn = turn;
        endTurnLater();
        this.sink(event);
        return;
      }
      // A run of one: the stream's last entry if that is this event (the broadcast's earlier
      // recipients queued it), else a new one.
      const shared = stream === this ? ownLog(this) : logOf(stream, this.lane);
      const last = shared.lines.length - 1;
      this.#start = last >= 0 && shared.lines[last] === event
        ? last
        : logEntry(shared, event, bytes);
      this.#end = this.#start + 1;
      this.#runLog = shared;
    } else if (log.stream === this) {
      this.#end = logEntry(log, event, bytes) + 1; // its own log takes anything
    } else if (log.stream === stream && log.flush === flushes) {
      // The stream's log of this turn (one per stream and lane; this outbox's lane is fixed).
      if (this.#end === log.lines.length) {
        // Its run ends the log: the event goes after it, as a new entry.
        this.#end = logEntry(log, event, bytes) + 1;
      } else if (this.#end === log.lines.length - 1 && log.lines[this.#end] === event) {
        // The entry just after its run is this event: the broadcast queued it for others first.
        this.#end++;
      } else this.#ownFrom(log, event, bytes);
    } else this.#ownFrom(log, event, bytes);
    this.#bytes += bytes;
    schedule(this);
  }

  /**
   * Its events are no longer one run of one shared log (an event of another stream, or one that
   * others got and it did not, came between): they go on in a log of its own.
   */
  #ownFrom(log: TurnLog, event: string, bytes: number): void {
    const own = ownLog(this);
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
    const to = this.#end;
    this.#busyIn = turn;
    this.#runLog = undefined;
    this.#bytes = 0;
    // Frames cut at the same lines for every outbox with this run, so that they are joined once.
    for (let start = from; start < to;) {
      const end = frameEnd(log.sums, start, to);
      this.sink(log.stream === this ? join(log, start, end) : runFrame(log, start, end));
      start = end;
    }
  }

  /** Forgets what is queued (the connection is gone). */
  discard(): void {
    this.#runLog = undefined;
    this.#bytes = 0;
    dirty.delete(this);
    this.dirty = false;
  }
}
