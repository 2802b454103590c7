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
 * This turn's queued events, in the order they were first queued; a broadcast's event is in it
 * once for all its recipients, which queue it one after another. So a recipient's events are
 * usually one run of this log: its outbox then keeps where the run starts and ends, not a list of
 * its own (measured at fan-out: the per-outbox lists and comparing them were a third of the
 * server's time). Each lane (one per format: a broadcast queues its text line and its JSON line
 * for members in turn) has its own log, so that both kinds of recipients keep their runs.
 */
interface TurnLog {
  readonly lines: string[];
  /** `sums[i]` is the UTF-8 bytes of `lines[0..i)`: any run's size in one subtraction. */
  readonly sums: number[];
  /** Frames joined from runs of it, by first line: the next outbox with that run reuses them. */
  frames?: Map<number, { end: number; frame: string }>;
}

/** This turn's log for each lane. */
let logs: TurnLog[] = [];

function logOf(lane: number): TurnLog {
  return logs[lane] ??= { lines: [], sums: [0] };
}

/** Appends `event` to a log; returns its index. */
function logEntry(log: TurnLog, event: string, bytes: number): number {
  const { lines, sums } = log;
  lines.push(event);
  sums.push(sums[lines.length - 1]! + bytes);
  return lines.length - 1;
}

/** The last list joined in this flush, reused by the next outbox whose list is the same. */
let lastBatch: string[] = [];
let lastFrame = "";

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
  lastBatch = [];
  lastFrame = "";
  logs = [];
  lastFlushEnd = performance.now();
  if (dirty.size > 0) endTurnLater();
}

/** Joins `lines[start..end)` of a turn's log into one frame, shared by every outbox that asks. */
function runFrame(runLog: TurnLog, start: number, end: number): string {
  const frames = runLog.frames ??= new Map();
  const known = frames.get(start);
  if (known?.end === end) return known.frame;
  const lines = runLog.lines;
  const frame = start === 0 && end === lines.length
    ? lines.join("\n")
    : lines.slice(start, end).join("\n");
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

/** Joins lines into one frame, sharing the string with the previous outbox when the batch is the same. */
function joined(lines: string[]): string {
  if (lines.length === lastBatch.length && lines.every((line, i) => line === lastBatch[i])) {
    return lastFrame;
  }
  lastBatch = lines;
  lastFrame = lines.join("\n");
  return lastFrame;
}

/** One connection's outbound queue. */
export class Outbox {
  /** Its queued events as one run of a turn's log: `#runLog.lines[#start..#end)`. */
  #runLog: TurnLog | undefined;
  #start = 0;
  #end = 0;
  /** Its queued events as a list of its own, once they stopped being one run. */
  #lines: string[] | undefined;
  #sizes: number[] | undefined;
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
   * `bytes` is its UTF-8 length, computed once per broadcast by the caller.
   */
  push(event: string, bytes: number): void {
    if (!scheduled) beginTurn();
    const runLog = this.#runLog;
    const lines = this.#lines;
    if (runLog === undefined && lines === undefined) {
      if (this.#sentIn !== turn && this.#busyIn !== turn) {
        this.#sentIn = turn;
        endTurnLater();
        this.sink(event);
        return;
      }
      // A run of one: the log's last entry if that is this event (the broadcast's earlier
      // recipients queued it), else a new one.
      const log = logOf(this.lane);
      const last = log.lines.length - 1;
      this.#start = last >= 0 && log.lines[last] === event ? last : logEntry(log, event, bytes);
      this.#end = this.#start + 1;
      this.#runLog = log;
    } else if (lines !== undefined) {
      lines.push(event);
      this.#sizes!.push(bytes);
    } else {
      const log = runLog!;
      const current = log === logs[this.lane];
      if (current && this.#end === log.lines.length) {
        // Its run ends the log: the event goes after it, as a new entry.
        this.#end = logEntry(log, event, bytes) + 1;
      } else if (current && this.#end === log.lines.length - 1 && log.lines[this.#end] === event) {
        // The entry just after its run is this event: the broadcast queued it for others first.
        this.#end++;
      } else {
        // Its events are no longer one run of the log (another room's events came between, or
        // one for it alone): a list of its own from here on.
        const { lines: entries, sums } = log;
        const own = entries.slice(this.#start, this.#end);
        const sizes = own.map((_, i) => sums[this.#start + i + 1]! - sums[this.#start + i]!);
        own.push(event);
        sizes.push(bytes);
        this.#lines = own;
        this.#sizes = sizes;
        this.#runLog = undefined;
      }
    }
    this.#bytes += bytes;
    schedule(this);
  }

  /** Sends everything queued now, in frames of at most {@link MAX_FRAME_BYTES}. */
  flush(): void {
    const runLog = this.#runLog;
    const lines = this.#lines;
    const sizes = this.#sizes;
    if (runLog === undefined && lines === undefined) return;
    const from = this.#start;
    const to = this.#end;
    this.#busyIn = turn;
    this.#runLog = undefined;
    this.#lines = undefined;
    this.#sizes = undefined;
    this.#bytes = 0;
    if (runLog !== undefined) {
      // Frames cut at the same lines for every outbox with this run, so they are joined once.
      for (let start = from; start < to;) {
        const end = frameEnd(runLog.sums, start, to);
        this.sink(runFrame(runLog, start, end));
        start = end;
      }
      return;
    }
    // Its own list: frames cut where the next line (and the newline before it) would not fit.
    const list = lines!;
    let start = 0;
    let size = sizes![0]!;
    for (let i = 1; i < list.length; i++) {
      const more = 1 + sizes![i]!;
      if (size + more > MAX_FRAME_BYTES) {
        this.sink(list.slice(start, i).join("\n"));
        start = i;
        size = sizes![i]!;
      } else size += more;
    }
    this.sink(start === 0 ? joined(list) : list.slice(start).join("\n"));
  }

  /** Forgets what is queued (the connection is gone). */
  discard(): void {
    this.#runLog = undefined;
    this.#lines = undefined;
    this.#sizes = undefined;
    this.#bytes = 0;
    dirty.delete(this);
    this.dirty = false;
  }
}
