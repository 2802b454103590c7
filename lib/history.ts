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

interface RoomLog {
  lastId: number;
  /** Oldest first; ids are contiguous, so a message's place is `id - messages[0].id`. */
  messages: Message[];
}

/** Default memory budget of the in-memory store: about 64 MiB of messages. */
export const DEFAULT_MEMORY_BUDGET = 64 * 1024 * 1024;

/** Rough bytes a message holds in memory: its strings (UTF-16) and the object around them. */
function weight(message: Message): number {
  return 2 * (message.text.length + message.from.length + message.room.length) + 96;
}

/**
 * The default store: per-room arrays in memory, bounded by the retention rules and by one
 * memory budget for all rooms. Over budget, the rooms that spoke least recently lose their
 * messages first (their ids are remembered, so they are never reused).
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

  /** Approximate bytes of messages held. */
  get bytes(): number {
    return this.#bytes;
  }

  append(room: string, draft: Draft): Message {
    const log = this.#rooms.get(room) ?? { lastId: 0, messages: [] };
    this.#rooms.delete(room);
    this.#rooms.set(room, log);
    const message: Message = { room, id: ++log.lastId, ...draft };
    log.messages.push(message);
    this.#bytes += weight(message);
    // Trim in steps rather than one at a time, so a full room costs no shift per message.
    const excess = log.messages.length - this.#retention.maxCount;
    if (excess > 0 && (excess >= 64 || excess * 8 >= this.#retention.maxCount)) {
      this.#drop(log, excess);
    }
    this.#enforceBudget(log);
    return message;
  }

  latest(room: string, limit: number, before = Infinity): Message[] {
    const kept = this.#kept(room);
    const end = before === Infinity
      ? kept.length
      : Math.max(0, Math.min(kept.length, before - (kept[0]?.id ?? 0)));
    return kept.slice(Math.max(0, end - limit), end);
  }

  after(room: string, since: number): Recovery {
    const log = this.#rooms.get(room);
    const kept = this.#kept(room);
    const lastId = log?.lastId ?? 0;
    if (since > lastId || since < 0) return { messages: [], complete: false };
    const first = kept[0]?.id ?? lastId + 1;
    const messages = kept.slice(Math.max(0, since + 1 - first));
    return { messages, complete: since + 1 >= first };
  }

  head(room: string): number {
    return this.#rooms.get(room)?.lastId ?? 0;
  }

  close(): void {
    this.#rooms.clear();
    this.#bytes = 0;
  }

  /** The room's messages within the retention rules, oldest first. */
  #kept(room: string): Message[] {
    const log = this.#rooms.get(room);
    if (!log) return [];
    const { maxCount, maxAgeMs } = this.#retention;
    let start = Math.max(0, log.messages.length - maxCount);
    if (maxAgeMs > 0) {
      const cutoff = this.#now() - maxAgeMs;
      while (start < log.messages.length && log.messages[start]!.ts < cutoff) start++;
    }
    this.#drop(log, start);
    return log.messages;
  }

  #drop(log: RoomLog, count: number): void {
    if (count <= 0) return;
    for (const message of log.messages.splice(0, count)) this.#bytes -= weight(message);
  }

  /** Over budget: empty the least recently active rooms, then trim the busiest one itself. */
  #enforceBudget(current: RoomLog): void {
    for (const log of this.#rooms.values()) {
      if (this.#bytes <= this.#budget) return;
      if (log !== current) this.#drop(log, log.messages.length);
    }
    while (this.#bytes > this.#budget && current.messages.length > 1) {
      this.#drop(current, Math.ceil(current.messages.length / 4));
    }
  }
}
