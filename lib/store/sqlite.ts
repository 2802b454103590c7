/**
 * The SQLite history store (`--data natter.db`), on `node:sqlite`. WAL mode: each message
 * is its own committed transaction before anyone hears of it, so it survives `kill -9`.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import {
  BUDGET_PAGE,
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

/** `PRAGMA application_id` of a natter database: "natt". */
const APPLICATION_ID = 0x6e617474;
const SCHEMA_VERSION = 1;
/** How often old messages are deleted by age, at most. */
const AGE_SWEEP_MS = 60_000;

/** The file cannot serve as natter's database; the message says why and what to do. */
export class StoreError extends Error {
  override name = "StoreError";
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    action INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS message_keys (
    room TEXT NOT NULL,
    key TEXT NOT NULL,
    id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (room, key)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS deleted (
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (room, id)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS rulings (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
`;

interface Row {
  room: string;
  id: number;
  ts: number;
  sender: string;
  text: string;
  action: number;
}

function toMessage(row: Row): Message {
  const message: Message = {
    room: row.room,
    id: row.id,
    ts: row.ts,
    from: row.sender,
    text: row.text,
  };
  if (row.action) message.action = true;
  return message;
}

function noPermission(path: string): StoreError {
  return new StoreError(
    `cannot open ${path}: no permission. Run with --allow-read=${path} --allow-write=${path}, ` +
      "or --allow-read --allow-write",
  );
}

/** Waits about a tenth of a millisecond, without yielding (a lock is held for microseconds). */
function pause(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 0.1);
}

/**
 * Runs `work` again while the database says it is locked: the workers of `deno serve
 * --parallel` (or several processes) write to one file, and a lock that outlasts the busy
 * timeout is still one that will be released.
 */
function retryLocked<T>(work: () => T): T {
  for (let attempt = 0;; attempt++) {
    try {
      return work();
    } catch (error) {
      if (attempt >= 3 || !/locked/i.test((error as Error).message)) throw error;
      pause();
    }
  }
}

/** The directory part of a path ("." for a bare file name). */
function dirname(path: string): string {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "." : cut === 0 ? "/" : path.slice(0, cut);
}

function open(path: string): DatabaseSync {
  // Ask without prompting: a server should fail with a message, not wait at a prompt.
  for (const name of ["read", "write"] as const) {
    if (Deno.permissions.querySync({ name, path }).state !== "granted") throw noPermission(path);
  }
  try {
    if (Deno.statSync(path).isDirectory) {
      throw new StoreError(
        `cannot open ${path}: it is a directory; give a file, e.g. ${path}/natter.db`,
      );
    }
  } catch (error) {
    if (error instanceof StoreError) throw error; // not there yet is fine: it is created
  }
  try {
    return new DatabaseSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      // Granted read and write and still refused: a path Deno guards more (/proc, /dev, /sys
      // want --allow-all). Say what Deno said rather than ask again for what was given.
      throw new StoreError(`cannot open ${path}: ${(error as Error).message}; choose another path`);
    }
    // Deno's permissions are granted (asked above): what refused is the system, or a missing
    // directory, which SQLite reports as "unable to open database file".
    const dir = dirname(path);
    const why = error instanceof Deno.errors.PermissionDenied
      ? `the system does not let this user create or write it`
      : /unable to open/i.test((error as Error).message)
      ? `check that the directory ${dir} exists and that this user may write to it`
      : (error as Error).message;
    throw new StoreError(`cannot open ${path}: ${why} (${(error as Error).message})`);
  }
}

/** History in a SQLite file; created if missing, refused if it is some other database. */
export class SqliteStore implements HistoryStore {
  readonly epoch: string;
  readonly #db: DatabaseSync;
  readonly #retention: Retention;
  readonly #now: () => number;
  readonly #next: StatementSync;
  readonly #insert: StatementSync;
  readonly #trim: StatementSync;
  readonly #latest: StatementSync;
  readonly #before: StatementSync;
  readonly #after: StatementSync;
  readonly #afterBack: StatementSync;
  readonly #bounds: StatementSync;
  readonly #head: StatementSync;
  readonly #keyed: StatementSync;
  readonly #remember: StatementSync;
  readonly #one: StatementSync;
  #lastSweep = 0;
  #lastKeySweep = 0;

  constructor(readonly path: string, retention: Partial<Retention> = {}) {
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
    const db = this.#db = open(path);
    try {
      // Before anything reads the file: another worker may hold it while it sets it up (the
      // switch to WAL needs it alone), and a read that does not wait fails at once.
      db.exec("PRAGMA busy_timeout = 5000");
      this.epoch = retryLocked(() => SqliteStore.#prepare(db, path));
    } catch (error) {
      db.close();
      if (error instanceof StoreError) throw error;
      // e.g. "attempt to write a readonly database": the file or its folder is not writable.
      throw new StoreError(`cannot use ${path}: ${(error as Error).message}`);
    }
    this.#next = db.prepare(
      "INSERT INTO rooms (name, last_id) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
    );
    this.#insert = db.prepare(
      "INSERT INTO messages (room, id, ts, sender, text, action) VALUES (?, ?, ?, ?, ?, ?)",
    );
    this.#trim = db.prepare("DELETE FROM messages WHERE room = ? AND id <= ?");
    this.#latest = db.prepare(
      "SELECT * FROM (SELECT * FROM messages WHERE room = ? AND ts >= ? ORDER BY id DESC LIMIT ?) ORDER BY id",
    );
    this.#before = db.prepare(
      "SELECT * FROM (SELECT * FROM messages WHERE room = ? AND ts >= ? AND id < ? ORDER BY id DESC LIMIT ?) ORDER BY id",
    );
    this.#after = db.prepare(
      "SELECT * FROM messages WHERE room = ? AND ts >= ? AND id > ? ORDER BY id",
    );
    this.#afterBack = db.prepare(
      "SELECT * FROM messages WHERE room = ? AND ts >= ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?",
    );
    this.#head = db.prepare("SELECT last_id FROM rooms WHERE name = ?");
    this.#keyed = db.prepare("SELECT id FROM message_keys WHERE room = ? AND key = ? AND at >= ?");
    this.#remember = db.prepare(
      "INSERT OR REPLACE INTO message_keys (room, key, id, at) VALUES (?, ?, ?, ?)",
    );
    this.#one = db.prepare("SELECT * FROM messages WHERE room = ? AND id = ?");
    this.#bounds = db.prepare(
      "SELECT (SELECT last_id FROM rooms WHERE name = ?1) AS last, (SELECT min(id) FROM messages WHERE room = ?1 AND ts >= ?2) AS first",
    );
  }

  /**
   * Checks (or sets up) the file as a natter database and returns its epoch. Check and setup
   * are one write transaction: workers that open a new file at once take turns, and none sees
   * another's half-made schema (tables, but no application id yet) as someone else's data.
   */
  static #prepare(db: DatabaseSync, path: string): string {
    let applicationId: number;
    let tables: number;
    try {
      db.exec("BEGIN IMMEDIATE");
      applicationId = Number(
        (db.prepare("PRAGMA application_id").get() as { application_id: number }).application_id,
      );
      tables = Number(
        (db.prepare("SELECT count(*) AS n FROM sqlite_master").get() as { n: number }).n,
      );
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      // Locked is not "not ours": retryLocked tries again, then reports it as it is.
      if (/locked/i.test((error as Error).message)) throw error;
      throw new StoreError(
        `${path} is not a natter database (${(error as Error).message}); give a new file name`,
      );
    }
    let epoch: string;
    try {
      if (applicationId !== APPLICATION_ID && (applicationId !== 0 || tables > 0)) {
        throw new StoreError(
          `${path} is not a natter database: it holds other data; give a new file name`,
        );
      }
      const version = Number(
        (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version,
      );
      if (applicationId === APPLICATION_ID && version > SCHEMA_VERSION) {
        throw new StoreError(
          `${path} was written by a newer natter (schema ${version}); upgrade natter`,
        );
      }
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      db.exec(SCHEMA);
      db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)").run(
        crypto.randomUUID(),
      );
      epoch = (db.prepare("SELECT value FROM meta WHERE key = 'epoch'").get() as { value: string })
        .value;
      db.exec("COMMIT");
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
    // Outside a transaction, and only once the file is known to be ours.
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    return epoch;
  }

  append(room: string, draft: Draft, key?: string): Stored {
    const stored = retryLocked(() => this.#append(room, draft, key));
    // After the commit, and never its failure: the message is kept whatever the sweep does.
    try {
      this.#sweep(Date.now());
    } catch {
      // another worker holds the file: a later append sweeps
    }
    return stored;
  }

  #append(room: string, draft: Draft, key: string | undefined): Stored {
    const db = this.#db;
    db.exec("BEGIN IMMEDIATE");
    try {
      const now = Date.now();
      if (key !== undefined) {
        const earlier = this.#keyed.get(room, key, now - KEY_WINDOW_MS) as
          | { id: number }
          | undefined;
        if (earlier) {
          const id = Number(earlier.id);
          const row = this.#one.get(room, id) as Row | undefined;
          db.exec("COMMIT");
          return { ...(row ? toMessage(row) : { room, id, ...draft }), duplicate: true };
        }
      }
      const id = Number((this.#next.get(room) as { last_id: number }).last_id);
      this.#insert.run(room, id, draft.ts, draft.from, draft.text, draft.action ? 1 : 0);
      this.#trim.run(room, id - this.#retention.maxCount);
      if (key !== undefined) this.#remember.run(room, key, id, now);
      db.exec("COMMIT");
      return { room, id, ...draft };
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
  }

  latest(room: string, limit: number, before?: number): Message[] {
    const rows = before === undefined
      ? this.#latest.all(room, this.#cutoff(), limit)
      : this.#before.all(room, this.#cutoff(), before, limit);
    return this.#marked(room, (rows as unknown as Row[]).map(toMessage));
  }

  after(room: string, since: number, budget?: number): Recovery {
    // One snapshot for the bounds and every page: another worker's append (and its trim) between
    // two reads would leave a gap behind a `complete` answer.
    this.#db.exec("BEGIN");
    try {
      return this.#afterIn(room, since, budget);
    } finally {
      this.#db.exec("COMMIT");
    }
  }

  #afterIn(room: string, since: number, budget: number | undefined): Recovery {
    const bounds = this.#bounds.get(room, this.#cutoff()) as {
      last: number | null;
      first: number | null;
    };
    const last = Number(bounds.last ?? 0);
    if (since > last || since < 0) return { messages: [], complete: false };
    const first = bounds.first === null ? last + 1 : Number(bounds.first);
    const messages = budget === undefined
      ? (this.#after.all(room, this.#cutoff(), since) as unknown as Row[]).map(toMessage)
      : this.#afterWithin(room, since, last, budget);
    if (messages === undefined) return { messages: [], complete: false };
    return { messages: this.#marked(room, messages), complete: since + 1 >= first };
  }

  /** The messages after `since`, newest first a page at a time; undefined past `budget`. */
  #afterWithin(room: string, since: number, last: number, budget: number): Message[] | undefined {
    const pages: Message[][] = [];
    let below = last + 1;
    let spent = 0;
    for (;;) {
      const rows = this.#afterBack.all(
        room,
        this.#cutoff(),
        since,
        below,
        BUDGET_PAGE,
      ) as unknown as Row[];
      const page = rows.map(toMessage).reverse();
      for (const message of page) spent += leastJsonBytes(message.text.length);
      if (spent > budget) return undefined;
      pages.unshift(page);
      if (rows.length < BUDGET_PAGE) return pages.flat();
      below = page[0]!.id;
    }
  }

  remove(room: string, id: number): Message | undefined {
    return retryLocked(() => {
      const row = this.#one.get(room, id) as Row | undefined;
      if (!row) return undefined;
      const before = this.#db.prepare("SELECT 1 FROM deleted WHERE room = ? AND id = ?").get(
        room,
        id,
      );
      if (before) return undefined; // deleted before: no message is kept under it
      const db = this.#db;
      db.exec("BEGIN IMMEDIATE");
      try {
        // The text leaves the file, not only the view.
        db.prepare("UPDATE messages SET text = '' WHERE room = ? AND id = ?").run(room, id);
        db.prepare("INSERT OR IGNORE INTO deleted (room, id) VALUES (?, ?)").run(room, id);
        db.exec("COMMIT");
      } catch (error) {
        if (db.isTransaction) db.exec("ROLLBACK");
        throw error;
      }
      // The old text is still in the write-ahead log until a checkpoint copies the page back:
      // one now (deletions are rare), so that it leaves the disk, not only the view.
      try {
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      } catch {
        // another connection holds it: the next automatic checkpoint does it
      }
      return tombstone(toMessage(row));
    });
  }

  /** Messages (in id order, either way) with the deleted ones as tombstones. */
  #marked(room: string, messages: Message[]): Message[] {
    if (messages.length === 0) return messages;
    const rows = this.#db.prepare(
      "SELECT id FROM deleted WHERE room = ? AND id BETWEEN ? AND ?",
    ).all(
      room,
      Math.min(messages[0]!.id, messages.at(-1)!.id),
      Math.max(messages[0]!.id, messages.at(-1)!.id),
    ) as { id: number }[];
    if (rows.length === 0) return messages;
    const deleted = new Set(rows.map((row) => Number(row.id)));
    return messages.map((message) => deleted.has(message.id) ? tombstone(message) : message);
  }

  head(room: string): number {
    return Number((this.#head.get(room) as { last_id: number } | undefined)?.last_id ?? 0);
  }

  rulings(): Ruling[] {
    const rows = this.#db.prepare("SELECT body FROM rulings").all() as { body: string }[];
    return rows.map((row) => JSON.parse(row.body) as Ruling);
  }

  rule(ruling: Ruling): void {
    retryLocked(() =>
      this.#db.prepare("INSERT OR REPLACE INTO rulings (id, body) VALUES (?, ?)").run(
        rulingId(ruling),
        JSON.stringify(ruling),
      )
    );
  }

  lift(id: string): void {
    retryLocked(() => this.#db.prepare("DELETE FROM rulings WHERE id = ?").run(id));
  }

  close(): void {
    try {
      this.#db.close();
    } catch {
      // already closed
    }
  }

  #cutoff(): number {
    return this.#retention.maxAgeMs > 0
      ? this.#now() - this.#retention.maxAgeMs
      : Number.MIN_SAFE_INTEGER;
  }

  /** Deletes messages past their age, and keys past their window, now and then. */
  #sweep(wallNow: number): void {
    if (wallNow - this.#lastKeySweep >= AGE_SWEEP_MS) {
      this.#lastKeySweep = wallNow;
      this.#db.prepare("DELETE FROM message_keys WHERE at < ?").run(wallNow - KEY_WINDOW_MS);
    }
    if (this.#retention.maxAgeMs <= 0) return;
    const now = this.#now();
    if (now - this.#lastSweep < AGE_SWEEP_MS) return;
    this.#lastSweep = now;
    this.#db.prepare("DELETE FROM messages WHERE ts < ?").run(this.#cutoff());
  }
}
