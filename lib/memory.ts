/**
 * The default store: history in memory, bounded by retention rules and one memory budget, with
 * rooms kept off the JavaScript heap as bytes (see {@link RoomLog}). It keeps every promise of
 * {@link HistoryStore}; tests/history_test.ts holds it, SQLite and Redis to the same suite.
 */

import {
  DEFAULT_RETENTION,
  type Draft,
  type HistoryStore,
  KEY_WINDOW_MS,
  type Message,
  type Recovery,
  type Retention,
  type Stored,
} from "./history.ts";
import { NATIVE_FROM, utf8Length } from "./utf8.ts";

/** Message keys the memory store remembers at most (each ~150 bytes). */
const MAX_KEYS = 100_000;

/** Default memory budget of the in-memory store: about 64 MiB of messages. */
export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

/** Bytes of one message's slot in a room's arrays: its time (8) and three numbers (12). */
const SLOT_BYTES = 20;
/**
 * What a room holding messages costs beside its arrays' contents: the log, its arrays as objects,
 * its name and its place in the maps, as the process holds them. Measured with rooms coming and
 * going (bench/rooms.ts, a one-message room each): ~900 bytes live on the heap, but about three
 * times that in resident memory once the heap has been churned by rooms that come and go. The
 * budget counts the latter, so that it bounds what the process holds, not only what is live.
 */
const ROOM_BYTES = 3072;
/** Marks an action in a slot's name length (names are far shorter than 2^31 bytes). */
const ACTION = 0x8000_0000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A room log's smallest arrays; they are sized to twice what they hold. */
const MIN_SLOTS = 4;
const MIN_BYTES = 64;
const NO_TIMES = new Float64Array(0);
const NO_NUMBERS = new Uint32Array(0);
const NO_BYTES = new Uint8Array(0);

/** The smallest power of two, at least `minimum`, that is at least `value`. */
function sized(value: number, minimum: number): number {
  let size = minimum;
  while (size < value) size *= 2;
  return size;
}

/**
 * Writes `text` as UTF-8 at `at` (the caller made room for it); returns the bytes
 * written. Short ASCII is copied here, a unit at a time: cheaper than a call into the runtime,
 * which takes long lines, and the rest of a short one from its first non-ASCII character.
 */
function writeUtf8(text: string, bytes: Uint8Array, at: number): number {
  const length = text.length;
  if (length >= NATIVE_FROM) return encoder.encodeInto(text, bytes.subarray(at)).written;
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
 * (bench/slow.ts). Here a message is an object only while it is being delivered, or read back.
 *
 * Entries live at slots [head, tail) and their bytes at [start of head, end) of the buffer.
 * Dropping the oldest moves `head`. When either array runs out of room, or holds less than an
 * eighth of its size, the live part moves to the front of arrays sized to twice what it needs:
 * a full room copies its live part once per as many appends, and a room whose messages got
 * shorter gives the memory back. A room with no messages holds no arrays.
 */
class RoomLog {
  /** Its neighbours in the store's recency list (rooms holding messages, least recent first). */
  older: RoomLog | undefined = undefined;
  newer: RoomLog | undefined = undefined;
  /** Its room's name, for the budget walk that starts from the list. */
  room = "";
  lastId = 0;
  head = 0;
  tail = 0;
  ts = NO_TIMES;
  /** Per slot: byte offset, name bytes (with {@link ACTION}), text bytes. */
  meta = NO_NUMBERS;
  bytes = NO_BYTES;
  end = 0;

  get count(): number {
    return this.tail - this.head;
  }

  /** Bytes its arrays take, and the log itself while it holds any. */
  get capacity(): number {
    if (this.ts.length === 0) return 0;
    return this.bytes.length + this.ts.length * SLOT_BYTES + ROOM_BYTES;
  }

  /** Id of the entry at slot `i`. */
  idAt(i: number): number {
    return this.lastId - (this.tail - 1 - i);
  }

  push(draft: Draft): void {
    // Room for the worst case, 3 bytes per UTF-16 unit, is known without counting; only when
    // that is not there are the bytes counted, and the arrays sized for what the message takes
    // (sized for the worst case, a room keeping one message grew and shrank them on every one).
    const most = 3 * (draft.from.length + draft.text.length);
    if (this.tail === this.ts.length || this.end + most > this.bytes.length) {
      const need = utf8Length(draft.from) + utf8Length(draft.text);
      if (this.tail === this.ts.length || this.end + need > this.bytes.length) this.#compact(need);
    }
    const i = this.tail++;
    const at = this.end;
    const from = writeUtf8(draft.from, this.bytes, at);
    const text = writeUtf8(draft.text, this.bytes, at + from);
    this.end = at + from + text;
    this.ts[i] = draft.ts;
    this.meta[3 * i] = at;
    this.meta[3 * i + 1] = draft.action ? (from | ACTION) >>> 0 : from;
    this.meta[3 * i + 2] = text;
    this.lastId++;
  }

  /** Drops the `n` oldest entries. */
  drop(n: number): void {
    this.head = Math.min(this.tail, this.head + n);
    if (this.head === this.tail) return this.#release();
    // Less than an eighth used (of arrays above their smallest size): give memory back.
    const live = this.end - this.meta[3 * this.head]!;
    const bytes = this.bytes.length;
    const slots = this.ts.length;
    if ((live * 8 < bytes && bytes > MIN_BYTES) || (this.count * 8 < slots && slots > MIN_SLOTS)) {
      this.#compact(0);
    }
  }

  /** The entry at slot `i` as a message of `room`. */
  message(room: string, i: number): Message {
    const at = this.meta[3 * i]!;
    const fromField = this.meta[3 * i + 1]!;
    const fromEnd = at + (fromField & ~ACTION);
    const message: Message = {
      room,
      id: this.idAt(i),
      ts: this.ts[i]!,
      from: decoder.decode(this.bytes.subarray(at, fromEnd)),
      text: decoder.decode(this.bytes.subarray(fromEnd, fromEnd + this.meta[3 * i + 2]!)),
    };
    if (fromField & ACTION) message.action = true;
    return message;
  }

  /** Entries at slots [from, to) as messages. */
  messages(room: string, from: number, to: number): Message[] {
    const list: Message[] = [];
    for (let i = from; i < to; i++) list.push(this.message(room, i));
    return list;
  }

  #release(): void {
    this.head = this.tail = this.end = 0;
    this.ts = NO_TIMES;
    this.meta = NO_NUMBERS;
    this.bytes = NO_BYTES;
  }

  /** Moves the live entries to the front of arrays twice the size they need (with `needBytes` more). */
  #compact(needBytes: number): void {
    const count = this.count;
    const first = count > 0 ? this.meta[3 * this.head]! : 0;
    const live = this.end - first;
    const slots = sized(2 * (count + 1), MIN_SLOTS);
    const size = sized(2 * (live + needBytes), MIN_BYTES);
    const ts = slots === this.ts.length ? this.ts : new Float64Array(slots);
    ts.set(this.ts.subarray(this.head, this.tail));
    const meta = slots === this.ts.length ? this.meta : new Uint32Array(3 * slots);
    meta.set(this.meta.subarray(3 * this.head, 3 * this.tail));
    for (let i = 0; i < count; i++) meta[3 * i] = meta[3 * i]! - first;
    if (size === this.bytes.length) this.bytes.copyWithin(0, first, this.end);
    else {
      const bytes = new Uint8Array(size);
      bytes.set(this.bytes.subarray(first, this.end));
      this.bytes = bytes;
    }
    this.ts = ts;
    this.meta = meta;
    this.head = 0;
    this.tail = count;
    this.end = live;
  }
}

/**
 * The default store: per-room logs in memory (see {@link RoomLog}), bounded by the retention
 * rules and by one memory budget for all rooms: the full size of every room's arrays (about
 * twice what the messages take), plus a little per room holding any. Over budget, the
 * rooms that spoke least recently lose their messages first.
 *
 * Rooms are forgotten, so that a stream of new room names costs memory only within the budget:
 * a room that lost its messages and has no members (see {@link HistoryStore.hold}) goes
 * entirely. Its ids are not reused: a room that starts (again) starts past the highest id of
 * every room forgotten so far, so a client holding an old position learns that what came after
 * it is gone. Every step is O(1) whatever the number of rooms: the budget walks only rooms
 * holding messages, least recently active first, and each one it visits it empties.
 */
export class MemoryStore implements HistoryStore {
  readonly epoch = crypto.randomUUID();
  /** Rooms holding messages, by name; their recency is the list from {@link #oldest}. */
  readonly #rooms = new Map<string, RoomLog>();
  /**
   * The recency list: the least and the most recently active rooms holding messages, linked
   * through their logs. A list, not a Map's order: deleting a Map's first entries leaves holes
   * that every walk from its start skips again until the table is rebuilt.
   */
  #oldest: RoomLog | undefined;
  #newest: RoomLog | undefined;
  /** Rooms holding no messages that a hub has members in: their place is kept. */
  readonly #idle = new Map<string, RoomLog>();
  /** How many hubs hold each room (see {@link hold}). */
  readonly #held = new Map<string, number>();
  readonly #retention: Retention;
  readonly #now: () => number;
  readonly #budget: number;
  #bytes = 0;
  /** The highest id of every room forgotten so far: a room that starts again starts past it. */
  #forgotten = 0;
  /** Message keys by room and key: the id stored under each, and when; the oldest first. */
  readonly #keys = new Map<string, { id: number; at: number }>();
  /** The same keys in the order they came (a queue read from {@link #keyHead}), for expiry. */
  #keyQueue: { keyed: string; at: number }[] = [];
  #keyHead = 0;

  constructor(retention: Partial<Retention> = {}, budget = DEFAULT_MEMORY_BUDGET) {
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
    this.#budget = budget;
  }

  /** Bytes held for messages: every room's arrays at their full size, and a little per room. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Rooms the store knows: those holding messages, and those held by a hub. */
  get rooms(): number {
    return this.#rooms.size + this.#idle.size;
  }

  hold(room: string): void {
    this.#held.set(room, (this.#held.get(room) ?? 0) + 1);
    if (!this.#rooms.has(room) && !this.#idle.has(room)) this.#idle.set(room, this.#fresh());
  }

  release(room: string): void {
    const count = (this.#held.get(room) ?? 0) - 1;
    if (count > 0) return void this.#held.set(room, count);
    this.#held.delete(room);
    const log = this.#idle.get(room);
    if (log) this.#forget(room, log);
  }

  append(room: string, draft: Draft, key?: string): Stored {
    const keyed = key === undefined ? undefined : `${room}\u0000${key}`;
    if (keyed !== undefined) {
      const earlier = this.#earlier(keyed);
      if (earlier !== undefined) return this.#duplicate(room, earlier, draft);
    }
    let log = this.#rooms.get(room);
    if (log === undefined) {
      log = this.#idle.get(room);
      if (log) this.#idle.delete(room);
      else log = this.#fresh();
      log.room = room;
      this.#rooms.set(room, log);
      this.#link(log);
    } else if (log !== this.#newest) {
      // The most recently active room last.
      this.#unlink(log);
      this.#link(log);
    }
    const before = log.capacity;
    log.push(draft);
    const message: Message = {
      room,
      id: log.lastId,
      ts: draft.ts,
      from: draft.from,
      text: draft.text,
    };
    if (draft.action) message.action = true;
    if (keyed !== undefined) this.#remember(keyed, message.id);
    const excess = log.count - this.#retention.maxCount;
    if (excess > 0) log.drop(excess);
    this.#bytes += log.capacity - before;
    this.#enforceBudget(room, log);
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
    const lastId = log?.lastId ?? this.#forgotten;
    if (since > lastId || since < 0) return { messages: [], complete: false };
    // A room it does not know: nothing was missed only by a client that saw nothing.
    if (!log) return { messages: [], complete: since === 0 };
    const first = log.count > 0 ? log.idAt(log.head) : lastId + 1;
    const from = log.head + Math.max(0, since + 1 - first);
    return { messages: log.messages(room, from, log.tail), complete: since + 1 >= first };
  }

  head(room: string): number {
    return (this.#rooms.get(room) ?? this.#idle.get(room))?.lastId ?? this.#forgotten;
  }

  close(): void {
    this.#rooms.clear();
    this.#idle.clear();
    this.#held.clear();
    this.#keys.clear();
    this.#keyQueue = [];
    this.#keyHead = 0;
    this.#oldest = this.#newest = undefined;
    this.#bytes = 0;
  }

  /** The id stored under a key within the window; forgets keys past it, oldest first. */
  #earlier(keyed: string): number | undefined {
    const cutoff = performance.now() - KEY_WINDOW_MS;
    const queue = this.#keyQueue;
    while (this.#keyHead < queue.length) {
      const { keyed: old, at } = queue[this.#keyHead]!;
      if (at >= cutoff && this.#keys.size <= MAX_KEYS) break;
      this.#keyHead++;
      if (this.#keys.get(old)?.at === at) this.#keys.delete(old);
    }
    if (this.#keyHead > 1024 && this.#keyHead * 2 > queue.length) {
      this.#keyQueue = queue.slice(this.#keyHead);
      this.#keyHead = 0;
    }
    return this.#keys.get(keyed)?.id;
  }

  #remember(keyed: string, id: number): void {
    const at = performance.now();
    this.#keys.set(keyed, { id, at });
    this.#keyQueue.push({ keyed, at });
  }

  /** Puts a log at the recent end of the recency list. */
  #link(log: RoomLog): void {
    log.older = this.#newest;
    log.newer = undefined;
    if (this.#newest) this.#newest.newer = log;
    else this.#oldest = log;
    this.#newest = log;
  }

  #unlink(log: RoomLog): void {
    if (log.older) log.older.newer = log.newer;
    else this.#oldest = log.newer;
    if (log.newer) log.newer.older = log.older;
    else this.#newest = log.older;
    log.older = log.newer = undefined;
  }

  /** The message stored under an id, as kept, or as the resend says it was when no longer kept. */
  #duplicate(room: string, id: number, draft: Draft): Stored {
    const log = this.#rooms.get(room);
    const slot = log && log.count > 0 ? log.head + (id - log.idAt(log.head)) : -1;
    const message = log && slot >= log.head && slot < log.tail
      ? log.message(room, slot)
      : { room, id, ...draft };
    return { ...message, duplicate: true };
  }

  /** A log for a room that starts: past every id forgotten, so none is given out twice. */
  #fresh(): RoomLog {
    const log = new RoomLog();
    log.lastId = this.#forgotten;
    return log;
  }

  #forget(room: string, log: RoomLog): void {
    this.#idle.delete(room);
    if (log.lastId > this.#forgotten) this.#forgotten = log.lastId;
  }

  /** The room's log with what is past the retention rules dropped. */
  #kept(room: string): RoomLog | undefined {
    const log = this.#rooms.get(room);
    if (!log) return this.#idle.get(room);
    const { maxAgeMs } = this.#retention;
    if (maxAgeMs > 0) {
      const cutoff = this.#now() - maxAgeMs;
      let old = 0;
      while (log.head + old < log.tail && log.ts[log.head + old]! < cutoff) old++;
      this.#drop(room, log, old);
    }
    return log;
  }

  /**
   * Over budget: empty the least recently active rooms, then trim the busiest one itself.
   * Each room visited is emptied and leaves the walk, so the walk costs O(1) per message
   * amortised, however many rooms there are.
   */
  #enforceBudget(current: string, log: RoomLog): void {
    while (this.#bytes > this.#budget) {
      const oldest = this.#oldest;
      if (!oldest || oldest === log) break;
      this.#drop(oldest.room, oldest, oldest.count);
    }
    while (this.#bytes > this.#budget && log.count > 1) {
      this.#drop(current, log, Math.ceil(log.count / 4));
    }
  }

  /** Drops the `n` oldest messages of a room; a room left empty leaves the recency order. */
  #drop(room: string, log: RoomLog, n: number): void {
    if (n <= 0) return;
    const before = log.capacity;
    log.drop(n);
    this.#bytes += log.capacity - before;
    if (log.count > 0) return;
    this.#rooms.delete(room);
    this.#unlink(log);
    if (this.#held.has(room)) this.#idle.set(room, log);
    else this.#forget(room, log);
  }
}
