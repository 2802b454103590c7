/**
 * Message history: the store interface and its retention rules. The stores: memory
 * (lib/store/memory.ts), SQLite (lib/store/sqlite.ts) and Redis (lib/store/redis_store.ts); one shared test suite
 * holds them all to the promises below.
 *
 * Promises every store keeps: ids in a room grow by one with each message and are never
 * reused under one epoch (not after retention drops old ones, not after the memory store
 * forgets an unused room, and for a file store not after a restart); a stored message never
 * changes; reads return messages oldest first. A room's first id is 1 in a new store; a room
 * the memory store forgot starts past every id it forgot.
 */

import { HISTORY_LIMIT } from "../base/defaults.ts";

/** How long a message's key is remembered (see {@link HistoryStore.append}). */
export const KEY_WINDOW_MS = 10 * 60 * 1000;

/** A stored chat message. */
export interface Message {
  room: string;
  id: number;
  ts: number;
  from: string;
  text: string;
  action?: true;
  /** A moderator deleted it: a tombstone, its text gone (lib/chat/community.ts). */
  deleted?: true;
}

/**
 * Puts a message's own fields on `into`, one by one, in the order they are written out (after
 * whatever `into` holds already). Every message passes through here on its way out, and a spread
 * copies each field the slow way (bench/RESULTS.md, twelfth session).
 */
export function copyMessage<T extends object>(into: T, message: Message): T & Message {
  const copy = into as T & Message;
  copy.room = message.room;
  copy.id = message.id;
  copy.ts = message.ts;
  copy.from = message.from;
  copy.text = message.text;
  if (message.action) copy.action = true;
  if (message.deleted) copy.deleted = true;
  return copy;
}

/** A message's own fields, without what a store says about it (`duplicate`, `epoch`). */
export function messageOf(stored: Message): Message {
  return copyMessage({}, stored);
}

/** What a deleted message leaves in history: its place, time and author, not its text. */
export function tombstone(message: Message): Message {
  return {
    room: message.room,
    id: message.id,
    ts: message.ts,
    from: message.from,
    text: "",
    deleted: true,
  };
}

/** A message before the store gives it its id. */
export type Draft = Omit<Message, "room" | "id">;

/**
 * A moderator's standing decision (lib/chat/community.ts): a mute, a ban or a room's topic, kept
 * by the store so that it outlives a restart (with `--data` or `--redis`) and reaches every
 * instance that starts later.
 */
export interface Ruling {
  kind: "mute" | "ban" | "topic";
  /** The room it holds in; `*` for every room (bans). */
  room: string;
  /** Whom: `name:<name key>` or `addr:<address group>`; empty for a topic. */
  target: string;
  /** The name or address as the moderator gave it, for people to read. */
  shown: string;
  /** When it ends, in milliseconds since the epoch; 0: until lifted. */
  until: number;
  /** Who decided, and when. */
  by: string;
  ts: number;
  reason?: string;
  /** A topic's text. */
  text?: string;
}

/** A ruling's identity: a newer ruling of the same kind, room and target replaces it. */
export function rulingId(ruling: Pick<Ruling, "kind" | "room" | "target">): string {
  return `${ruling.kind}|${ruling.room}|${ruling.target}`;
}

/** What {@link HistoryStore.append} returns: the message, and what the store knows of it. */
export interface Stored extends Message {
  /** Its key was seen before: this is the message stored then, not a new one. */
  duplicate?: true;
  /** The epoch it was stored under, where the store's epoch can change meanwhile. */
  epoch?: string;
}

/**
 * The store refused a message because it moved to a new epoch (it lost its data, or went back
 * in time): nothing was stored, and the message may be stored again under the new epoch.
 */
export class StoreReset extends Error {
  override name = "StoreReset";
}

/**
 * The store did not answer in time: the message may or may not be kept. `later` settles when
 * the store answers after all (with the message, if it was kept).
 */
export class Unconfirmed extends Error {
  override name = "Unconfirmed";
  constructor(message: string, readonly later: Promise<Stored>) {
    super(message);
  }
}

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
  /**
   * Stores a message under its room's next id. With a `key` seen in the room within
   * {@link KEY_WINDOW_MS}, stores nothing and returns the message stored under it, marked
   * `duplicate`. Throws {@link Unconfirmed} when it cannot tell whether the message was kept.
   */
  append(room: string, draft: Draft, key?: string): Maybe<Stored>;
  /** Up to `limit` of the newest messages, or of those before id `before`. */
  latest(room: string, limit: number, before?: number): Maybe<Message[]>;
  /**
   * Every kept message after id `since`. With `budget`: if they would take more than `budget`
   * bytes as JSON (at least {@link leastJsonBytes} each), none of them, marked incomplete, having
   * read little more than that from the store (a client asking for all since 0 in a room of
   * thousands of long messages cost a 100 ms read otherwise; it gets the latest instead).
   */
  after(room: string, since: number, budget?: number): Maybe<Recovery>;
  /** The last id given out in the room; 0 before its first message. */
  head(room: string): Maybe<number>;
  /**
   * Re-reads what may have changed while the store was unreachable: a Redis that restarted
   * without its data starts a new id space, under a new epoch.
   */
  refresh?(): Maybe<void>;
  /**
   * Another instance stored message `id` in `room` under the current epoch: a shared store that
   * later gives out an id at or below it there went back in time.
   */
  seen?(room: string, id: number): void;
  /**
   * A hub has members in the room (`hold`), or no longer (`release`): a store that forgets
   * rooms (the memory store) keeps a held room's place, so its ids stay contiguous.
   */
  hold?(room: string): void;
  release?(room: string): void;
  /**
   * Deletes a kept message: from now on every read gives its {@link tombstone}, and its text
   * is gone from the store. Returns the tombstone, or undefined when no such message is kept.
   */
  remove?(room: string, id: number): Maybe<Message | undefined>;
  /** Every ruling kept (some may have ended since; the reader checks `until`). */
  rulings?(): Maybe<Ruling[]>;
  /** Keeps a ruling, replacing one with the same {@link rulingId}. */
  rule?(ruling: Ruling): Maybe<void>;
  /** Forgets the ruling with this {@link rulingId}. */
  lift?(id: string): Maybe<void>;
  /** Flushes and releases the store. */
  close(): Maybe<void>;
}

/** Defaults: a few thousand messages per room, kept regardless of age. */
export const DEFAULT_RETENTION: Retention = { maxCount: HISTORY_LIMIT, maxAgeMs: 0 };

/**
 * The fewest bytes a message with `textLength` code units (or UTF-8 bytes) of text takes in a
 * JSON frame: each byte once, plus its fields. A lower bound: a reply's own measure (`fitting`
 * in lib/chat/replies.ts) is never below it, so a store that stops at a budget by this measure
 * never leaves out what would have fitted.
 */
export function leastJsonBytes(textLength: number): number {
  return textLength + 64;
}

/** Messages after `since` read newest first, a page at a time, until `budget` is passed. */
export const BUDGET_PAGE = 64;
