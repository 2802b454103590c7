/**
 * Message history: the store interface, its retention rules, and the in-memory store.
 * The SQLite store (lib/sqlite.ts) keeps the same promises on disk; one shared test suite
 * holds both to them.
 *
 * Promises every store keeps: ids in a room start at 1 and grow by one with each message,
 * never reused (not after retention drops old ones, and for a file store not after a
 * restart); a stored message never changes; reads return messages oldest first.
 */

/** A stored chat message. */
export interface Message {
  room: string;
  id: number;
  ts: number;
  from: string;
  text: string;
  action?: true;
}

/** A message before the store gives it its id. */
export type Draft = Omit<Message, "room" | "id">;

/** What a store keeps; the oldest go first. */
export interface Retention {
  /** Messages kept per room. */
  maxCount: number;
  /** Oldest message kept, in milliseconds of age; 0 keeps them regardless of age. */
  maxAgeMs: number;
  /** The clock, in milliseconds since the epoch. */
  now?: () => number;
}

/** Messages after a point, and whether they are all that came after it. */
export interface Recovery {
  messages: Message[];
  /** False when some messages after `since` are no longer kept, or `since` is not from this store. */
  complete: boolean;
}

/** A value now, or later (a networked store answers later). */
export type Maybe<T> = T | Promise<T>;

/**
 * Runs `next` on what `get` returns: at once when it is a plain value, when it settles when it
 * is a promise. `failed` receives the error either way (thrown now or rejected later). A
 * synchronous store thus keeps its callers synchronous, which keeps event order simple.
 */
export function when<T, R>(
  get: () => Maybe<T>,
  next: (value: T) => R,
  failed?: (error: unknown) => R,
): Maybe<R> {
  let value: Maybe<T>;
  try {
    value = get();
  } catch (error) {
    if (failed) return failed(error);
    throw error;
  }
  if (value instanceof Promise) return failed ? value.then(next, failed) : value.then(next);
  return next(value);
}

/**
 * Where messages live. A message is stored before anyone is told of it. The memory and
 * SQLite stores answer at once; the Redis store answers with promises.
 */
export interface HistoryStore {
  /**
   * Names this store's id space. A client that saw ids under another epoch (say, before an
   * in-memory server restarted) must not take them as positions here.
   */
  readonly epoch: string;
  /** Stores a message under its room's next id. */
  append(room: string, draft: Draft): Maybe<Message>;
  /** Up to `limit` of the newest messages, or of those before id `before`. */
  latest(room: string, limit: number, before?: number): Maybe<Message[]>;
  /** Every kept message after id `since`. */
  after(room: string, since: number): Maybe<Recovery>;
  /** The last id given out in the room; 0 before its first message. */
  head(room: string): Maybe<number>;
  /**
   * Re-reads what may have changed while the store was unreachable: a Redis that restarted
   * without its data starts a new id space, under a new epoch.
   */
  refresh?(): Maybe<void>;
  /** Flushes and releases the store. */
  close(): Maybe<void>;
}

/** Defaults: a few thousand messages per room, kept regardless of age. */
export const DEFAULT_RETENTION: Retention = { maxCount: 5000, maxAgeMs: 0 };

/** Default memory budget of the in-memory store: about 64 MiB of messages. */
export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

/** Bytes a message costs beside its UTF-8 text and name: its slots in the per-room arrays. */
const ENTRY_BYTES = 21;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A room log's first arrays; they double as a room needs more. */
const MIN_SLOTS = 16;
const MIN_BYTES = 2048;
const NO_TIMES = new Float64Array(0);
const NO_NUMBERS = new Uint32Array(0);
const NO_BYTES = new Uint8Array(0);

/**
 * Writes `text` as UTF-8 at `at`; returns the bytes written. ASCII is copied here, a unit at a
 * time: cheaper than a call into the runtime for the short lines of a chat. The rest of a line
 * with anything else goes through the TextEncoder.
 */
function writeUtf8(text: string, bytes: Uint8Array, at: number): number {
  const length = text.length;
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0x80) return i + encoder.encodeInto(text.slice(i), bytes.subarray(at + i)).written;
    bytes[at + i] = unit;
  }
  return length;
}

/**
 * One room's messages, off the JavaScript heap: names and texts as UTF-8 in one byte buffer,
 * times and places in typed arrays, oldest first. Kept as objects, a busy room's history was
 * a stream of objects that lived long enough to be promoted to V8's old generation and died
 * there: at 13,000 messages a second that grew the heap by 20–30 MiB between major collections
 * and added to the latency of every client (bench/slow.ts). Here a message is an object only
 * while it is being delivered, or read back.
 *
 * Entries live at indexes [head, tail) of the arrays and their bytes at [start[head], end) of
 * the buffer. Dropping the oldest moves `head`; when either runs out of room, the live part
 * moves to the front, into arrays twice as large if it fills more than half of them.
 */
class RoomLog {
  lastId = 0;
  head = 0;
  tail = 0;
  // Empty until the first message, and again once every message is dropped: a room that
  // went quiet keeps only its last id.
  ts = NO_TIMES;
  start = NO_NUMBERS;
  fromBytes = NO_NUMBERS;
  textBytes = NO_NUMBERS;
  action = NO_BYTES;
  bytes = NO_BYTES;
  end = 0;

  get count(): number {
    return this.tail - this.head;
  }

  /** Id of the entry at index `i`. */
  idAt(i: number): number {
    return this.lastId - (this.tail - 1 - i);
  }

  /** Appends an entry; returns the bytes it holds (for the budget). */
  push(draft: Draft): number {
    // UTF-8 takes at most 3 bytes per UTF-16 unit: make sure both strings fit.
    const worst = 3 * (draft.from.length + draft.text.length);
    if (this.tail === this.ts.length || this.end + worst > this.bytes.length) this.#compact(worst);
    const i = this.tail++;
    const at = this.end;
    const from = writeUtf8(draft.from, this.bytes, at);
    const text = writeUtf8(draft.text, this.bytes, at + from);
    this.end = at + from + text;
    this.ts[i] = draft.ts;
    this.start[i] = at;
    this.fromBytes[i] = from;
    this.textBytes[i] = text;
    this.action[i] = draft.action ? 1 : 0;
    this.lastId++;
    return from + text + ENTRY_BYTES;
  }

  /** Drops the `n` oldest entries; returns the bytes they held. */
  drop(n: number): number {
    let freed = 0;
    for (let k = 0; k < n && this.head < this.tail; k++, this.head++) {
      freed += this.fromBytes[this.head]! + this.textBytes[this.head]! + ENTRY_BYTES;
    }
    if (this.head === this.tail) this.#release();
    return freed;
  }

  /** The entry at index `i` as a message of `room`. */
  message(room: string, i: number): Message {
    const at = this.start[i]!;
    const fromEnd = at + this.fromBytes[i]!;
    const message: Message = {
      room,
      id: this.idAt(i),
      ts: this.ts[i]!,
      from: decoder.decode(this.bytes.subarray(at, fromEnd)),
      text: decoder.decode(this.bytes.subarray(fromEnd, fromEnd + this.textBytes[i]!)),
    };
    if (this.action[i]) message.action = true;
    return message;
  }

  /** Entries at indexes [from, to) as messages. */
  messages(room: string, from: number, to: number): Message[] {
    const list: Message[] = [];
    for (let i = from; i < to; i++) list.push(this.message(room, i));
    return list;
  }

  #release(): void {
    this.head = this.tail = this.end = 0;
    this.ts = NO_TIMES;
    this.start = this.fromBytes = this.textBytes = NO_NUMBERS;
    this.action = this.bytes = NO_BYTES;
  }

  /** Moves the live entries to the front, growing what is more than half full. */
  #compact(needBytes: number): void {
    const count = this.count;
    const first = count > 0 ? this.start[this.head]! : 0;
    const live = this.end - first;
    let slots = Math.max(MIN_SLOTS, this.ts.length);
    while (count + 1 > slots / 2) slots *= 2;
    let size = Math.max(MIN_BYTES, this.bytes.length);
    while (live + needBytes > size / 2) size *= 2;
    const move = <A extends Float64Array | Uint32Array | Uint8Array>(
      array: A,
      make: (n: number) => A,
    ) => {
      const target = slots === array.length ? array : make(slots);
      target.set(array.subarray(this.head, this.tail));
      return target;
    };
    this.ts = move(this.ts, (n) => new Float64Array(n));
    this.start = move(this.start, (n) => new Uint32Array(n));
    this.fromBytes = move(this.fromBytes, (n) => new Uint32Array(n));
    this.textBytes = move(this.textBytes, (n) => new Uint32Array(n));
    this.action = move(this.action, (n) => new Uint8Array(n));
    for (let i = 0; i < count; i++) this.start[i]! -= first;
    if (size === this.bytes.length) this.bytes.copyWithin(0, first, this.end);
    else {
      const bytes = new Uint8Array(size);
      bytes.set(this.bytes.subarray(first, this.end));
      this.bytes = bytes;
    }
    this.head = 0;
    this.tail = count;
    this.end = live;
  }
}

/**
 * The default store: per-room logs in memory (see {@link RoomLog}), bounded by the retention
 * rules and by one memory budget for all rooms (UTF-8 bytes of names and texts, plus a few
 * bytes per message; the buffers holding them are at most about twice that). Over budget, the
 * rooms that spoke least recently lose their messages first (their ids are remembered, so they
 * are never reused).
 */
export class MemoryStore implements HistoryStore {
  readonly epoch = crypto.randomUUID();
  /** In order of last message: the least recently active room first. */
  readonly #rooms = new Map<string, RoomLog>();
  readonly #retention: Retention;
  readonly #now: () => number;
  readonly #budget: number;
  #bytes = 0;

  constructor(retention: Partial<Retention> = {}, budget = DEFAULT_MEMORY_BUDGET) {
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
    this.#budget = budget;
  }

  /** Bytes of messages held (their UTF-8 names and texts, and a few bytes each beside). */
  get bytes(): number {
    return this.#bytes;
  }

  append(room: string, draft: Draft): Message {
    const log = this.#rooms.get(room) ?? new RoomLog();
    this.#rooms.delete(room);
    this.#rooms.set(room, log);
    this.#bytes += log.push(draft);
    const message: Message = { room, id: log.lastId, ...draft };
    const excess = log.count - this.#retention.maxCount;
    if (excess > 0) this.#bytes -= log.drop(excess);
    this.#enforceBudget(log);
    return message;
  }

  latest(room: string, limit: number, before = Infinity): Message[] {
    const log = this.#kept(room);
    if (!log) return [];
    // Index of the first entry at or after `before` (ids are contiguous).
    const end = before === Infinity
      ? log.tail
      : Math.max(log.head, Math.min(log.tail, log.head + (before - log.idAt(log.head))));
    return log.messages(room, Math.max(log.head, end - limit), end);
  }

  after(room: string, since: number): Recovery {
    const log = this.#kept(room);
    const lastId = log?.lastId ?? 0;
    if (since > lastId || since < 0) return { messages: [], complete: false };
    if (!log) return { messages: [], complete: true };
    const first = log.count > 0 ? log.idAt(log.head) : lastId + 1;
    const from = log.head + Math.max(0, since + 1 - first);
    return { messages: log.messages(room, from, log.tail), complete: since + 1 >= first };
  }

  head(room: string): number {
    return this.#rooms.get(room)?.lastId ?? 0;
  }

  close(): void {
    this.#rooms.clear();
    this.#bytes = 0;
  }

  /** The room's log with what is past the retention rules dropped. */
  #kept(room: string): RoomLog | undefined {
    const log = this.#rooms.get(room);
    if (!log) return undefined;
    const { maxAgeMs } = this.#retention;
    if (maxAgeMs > 0) {
      const cutoff = this.#now() - maxAgeMs;
      let old = 0;
      while (log.head + old < log.tail && log.ts[log.head + old]! < cutoff) old++;
      this.#bytes -= log.drop(old);
    }
    return log;
  }

  /** Over budget: empty the least recently active rooms, then trim the busiest one itself. */
  #enforceBudget(current: RoomLog): void {
    for (const log of this.#rooms.values()) {
      if (this.#bytes <= this.#budget) return;
      if (log !== current) this.#bytes -= log.drop(log.count);
    }
    while (this.#bytes > this.#budget && current.count > 1) {
      this.#bytes -= current.drop(Math.ceil(current.count / 4));
    }
  }
}
