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
  leastJsonBytes,
  type Message,
  type Recovery,
  type Retention,
  type Ruling,
  rulingId,
  type Stored,
  tombstone,
} from "./history.ts";
import { RoomLog } from "./room_log.ts";

/** Message keys the memory store remembers at most (each ~150 bytes). */
const MAX_KEYS = 100_000;

/** Default memory budget of the in-memory store: about 64 MiB of messages. */
export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

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
  /** Deleted messages' ids, by room (their texts stay in the room's log until it drops them). */
  readonly #deleted = new Map<string, Set<number>>();
  /** Moderators' rulings, by {@link rulingId}. */
  readonly #rulings = new Map<string, Ruling>();

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
    return this.#marked(room, log.messages(room, Math.max(log.head, end - limit), end));
  }

  after(room: string, since: number, budget?: number): Recovery {
    const log = this.#kept(room);
    const lastId = log?.lastId ?? this.#forgotten;
    if (since > lastId || since < 0) return { messages: [], complete: false };
    // A room it does not know: nothing was missed only by a client that saw nothing.
    if (!log) return { messages: [], complete: since === 0 };
    const first = log.count > 0 ? log.idAt(log.head) : lastId + 1;
    const from = log.head + Math.max(0, since + 1 - first);
    if (budget !== undefined) {
      // Measured from the sizes it keeps, newest first, before anything is decoded.
      const deleted = this.#deleted.get(room);
      let spent = 0;
      for (let i = log.tail - 1; i >= from; i--) {
        // A deleted message goes as its tombstone, with no text.
        spent += leastJsonBytes(deleted?.has(log.idAt(i)) ? 0 : log.textBytes(i));
        if (spent > budget) return { messages: [], complete: false };
      }
    }
    return {
      messages: this.#marked(room, log.messages(room, from, log.tail)),
      complete: since + 1 >= first,
    };
  }

  remove(room: string, id: number): Message | undefined {
    const log = this.#kept(room);
    if (!log || log.count === 0) return undefined;
    const first = log.idAt(log.head);
    if (!Number.isSafeInteger(id) || id < first || id > log.lastId) return undefined;
    let deleted = this.#deleted.get(room);
    if (deleted?.has(id)) return undefined; // deleted before: no message is kept under it
    const message = log.message(room, log.head + (id - first));
    if (!deleted) this.#deleted.set(room, deleted = new Set());
    deleted.add(id);
    return tombstone(message);
  }

  /** Messages with the deleted ones as tombstones. */
  #marked(room: string, messages: Message[]): Message[] {
    const deleted = this.#deleted.get(room);
    if (!deleted) return messages;
    return messages.map((message) => deleted.has(message.id) ? tombstone(message) : message);
  }

  head(room: string): number {
    return (this.#rooms.get(room) ?? this.#idle.get(room))?.lastId ?? this.#forgotten;
  }

  rulings(): Ruling[] {
    return [...this.#rulings.values()];
  }

  rule(ruling: Ruling): void {
    this.#rulings.set(rulingId(ruling), ruling);
  }

  lift(id: string): void {
    this.#rulings.delete(id);
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
    this.#deleted.delete(room);
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
