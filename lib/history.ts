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

/** Where messages live. Synchronous: a message is stored before anyone is told of it. */
export interface HistoryStore {
  /**
   * Names this store's id space. A client that saw ids under another epoch (say, before an
   * in-memory server restarted) must not take them as positions here.
   */
  readonly epoch: string;
  /** Stores a message under its room's next id. */
  append(room: string, draft: Draft): Message;
  /** Up to `limit` of the newest messages, or of those before id `before`. */
  latest(room: string, limit: number, before?: number): Message[];
  /** Every kept message after id `since`. */
  after(room: string, since: number): Recovery;
  /** Flushes and releases the store. */
  close(): void;
}

/** Defaults: a few thousand messages per room, kept regardless of age. */
export const DEFAULT_RETENTION: Retention = { maxCount: 5000, maxAgeMs: 0 };

interface RoomLog {
  lastId: number;
  /** Oldest first; ids are contiguous, so a message's place is `id - messages[0].id`. */
  messages: Message[];
}

/** The default store: per-room arrays in memory, bounded by the retention rules. */
export class MemoryStore implements HistoryStore {
  readonly epoch = crypto.randomUUID();
  readonly #rooms = new Map<string, RoomLog>();
  readonly #retention: Retention;
  readonly #now: () => number;

  constructor(retention: Partial<Retention> = {}) {
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
  }

  append(room: string, draft: Draft): Message {
    let log = this.#rooms.get(room);
    if (!log) this.#rooms.set(room, log = { lastId: 0, messages: [] });
    const message: Message = { room, id: ++log.lastId, ...draft };
    log.messages.push(message);
    // Trim in steps rather than one at a time, so a full room costs no shift per message.
    const excess = log.messages.length - this.#retention.maxCount;
    if (excess > 0 && (excess >= 64 || excess * 8 >= this.#retention.maxCount)) {
      log.messages.splice(0, excess);
    }
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

  close(): void {
    this.#rooms.clear();
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
    if (start > 0) log.messages.splice(0, start);
    return log.messages;
  }
}
