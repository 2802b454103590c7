/**
 * History in Redis: per-room ids and history in Redis Streams, the same for every instance, over
 * the link's command connection (lib/store/redis_link.ts).
 *
 * Keys, for room R: `natter:seq:R` (its last id, INCR'd), `natter:log:R` (a stream whose
 * entry ids are `<id>-0`, trimmed to the retention count), `natter:key:E:R:K` (the id stored
 * under message key K in epoch E, for {@link KEY_WINDOW_MS}); and `natter:epoch`, and `natter:writes` (a count of
 * every message stored, which each instance remembers the highest of: a Redis that comes back
 * with a lower count went back in time, say to an older snapshot, and would hand out ids again,
 * so the first instance to notice starts a new epoch).
 */

import { ClientOfflineError, ErrorReply } from "redis";
import {
  DEFAULT_RETENTION,
  type Draft,
  type HistoryStore,
  KEY_WINDOW_MS,
  type Message,
  type Recovery,
  type Retention,
  type Ruling,
  rulingId,
  type Stored,
  StoreReset,
  tombstone,
  Unconfirmed,
} from "./history.ts";
import { RedisError, type RedisLink } from "./redis_link.ts";

const EPOCH_KEY = "natter:epoch";
const WRITES_KEY = "natter:writes";
/** Moderators' rulings (mutes, bans, topics), by id: a hash, read whole at start. */
const RULINGS_KEY = "natter:rulings";

/**
 * Stores a message under the room's next id, only while natter's epoch key still holds the
 * epoch this instance works in (a Redis that was emptied must not hand out ids again under the
 * old epoch), and only while the count of writes is past the highest this instance has seen (a
 * Redis restored from an older snapshot must not either). With a key seen within the window,
 * stores nothing and returns the id stored under it.
 *
 * KEYS: seq, log, epoch, writes, key (or ""). ARGV: maxlen, ts, from, text, action, epoch,
 * highest writes seen, key window in seconds. Returns {id, writes, duplicate (0/1)}.
 */
const APPEND = `
if redis.call('GET', KEYS[3]) ~= ARGV[6] then return redis.error_reply('NATTER_EPOCH changed') end
if KEYS[5] ~= '' then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return {tonumber(earlier), 0, 1} end
end
local writes = redis.call('INCR', KEYS[4])
if writes <= tonumber(ARGV[7]) then
  redis.call('DECR', KEYS[4])
  return redis.error_reply('NATTER_BACK in time: ' .. writes .. ' writes, ' .. ARGV[7] .. ' seen')
end
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0',
  'ts', ARGV[2], 'from', ARGV[3], 'text', ARGV[4], 'action', ARGV[5])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], id, 'EX', ARGV[8]) end
return {id, writes, 0}
`;

/**
 * The shared epoch: set when there is none (a new or emptied Redis), replaced when the count of
 * writes is below what this instance saw under the same epoch (a Redis gone back in time; the
 * count is then set to what was seen, so the new epoch starts past it).
 *
 * KEYS: epoch, writes. ARGV: a new epoch, the epoch this instance works in, highest writes seen.
 * Returns {epoch, writes}.
 */
const EPOCH = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local writes = tonumber(redis.call('GET', KEYS[2]) or '0')
if epoch == ARGV[2] and writes < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[3])
  return {ARGV[1], tonumber(ARGV[3])}
end
return {epoch, writes}
`;

/** The SHA-1 Redis knows a script by (EVALSHA), as hex. */
async function sha1(script: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(script));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Redis answered with an error: nothing was stored. */
class Refused extends Error {}

/** Says "Redis is down" in words a client can act on. */
function unavailable(error: unknown): Error {
  if (error instanceof ClientOfflineError) return new Error("the shared store (Redis) is down");
  return error as Error;
}

/** History in Redis: every instance sees the same ids and messages. */
export class RedisStore implements HistoryStore {
  readonly #retention: Retention;
  readonly #now: () => number;
  #epoch: string;
  /** The highest count of writes this instance has seen under its epoch. */
  #writes = 0;
  /** The append script's SHA-1: sent by name, not in full, once Redis has it. */
  #appendSha = "";

  private constructor(readonly link: RedisLink, retention: Partial<Retention>) {
    this.#epoch = "";
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
  }

  /** Connects the store to the shared epoch (setting it, for the first instance). */
  static async open(link: RedisLink, retention: Partial<Retention> = {}): Promise<RedisStore> {
    const store = new RedisStore(link, retention);
    store.#appendSha = await sha1(APPEND);
    await store.#sync();
    if (store.#epoch === "") throw new RedisError("Redis did not keep natter's epoch key");
    return store;
  }

  /** Reads the shared epoch (setting or replacing it, see {@link EPOCH}); true if it changed. */
  async #sync(): Promise<boolean> {
    const [epoch, writes] = await this.link.command.eval(EPOCH, {
      keys: [EPOCH_KEY, WRITES_KEY],
      arguments: [crypto.randomUUID(), this.#epoch, String(this.#writes)],
    }) as [string, number];
    if (epoch === this.#epoch) return false;
    if (this.#epoch !== "") {
      const back = epoch !== this.#epoch && writes >= this.#writes && this.#writes > 0;
      this.link.log.warn(
        back
          ? "Redis went back in time (restored from an older snapshot?): a new epoch, so that no id is given out twice"
          : "Redis has lost natter's data: a new epoch, message ids start again",
        { from: this.#epoch, to: epoch, writes, seen: this.#writes },
      );
    }
    this.#epoch = epoch;
    this.#writes = Number(writes);
    return true;
  }

  get epoch(): string {
    return this.#epoch;
  }

  /**
   * After an outage: a Redis that came back empty, or went back in time, gets a new epoch,
   * which every instance adopts.
   */
  async refresh(): Promise<void> {
    await this.link.answer(() => this.#sync());
  }

  seen(mark: number): void {
    if (mark > this.#writes) this.#writes = mark;
  }

  async append(room: string, draft: Draft, key?: string): Promise<Stored> {
    const epoch = this.#epoch;
    const options = {
      keys: [
        `natter:seq:${room}`,
        `natter:log:${room}`,
        EPOCH_KEY,
        WRITES_KEY,
        // Per epoch: under a new one, an id stored under an old key names another message.
        key === undefined ? "" : `natter:key:${epoch}:${room}:${key}`,
      ],
      arguments: [
        String(this.#retention.maxCount),
        String(draft.ts),
        draft.from,
        draft.text,
        draft.action ? "1" : "",
        epoch,
        String(this.#writes),
        String(Math.ceil(KEY_WINDOW_MS / 1000)),
      ],
    };
    // By its SHA-1 (about 100 bytes instead of the script's 700); a Redis that does not have it
    // yet (new, restarted, flushed) says NOSCRIPT without running anything, and gets it whole.
    const send = () =>
      this.link.command.evalSha(this.#appendSha, options).catch((error) => {
        if (error instanceof ErrorReply && error.message.startsWith("NOSCRIPT")) {
          return this.link.command.eval(APPEND, options);
        }
        throw error;
      });
    // Not sent at all (Redis known to be down or stalled, or the connection not ready): a plain
    // error, the message is not kept. Sent, and refused by Redis (an error reply; the script
    // changes nothing then): not kept either. Sent, and no answer in time, or the connection
    // lost before the answer: it may have run, so that is unknown, not "not sent".
    let sent: Promise<Stored> | undefined;
    try {
      return await this.link.answer(() =>
        sent = send().then(
          (reply) => this.#stored(room, draft, epoch, reply as [number, number, number]),
          (error) => this.#failed(error),
        )
      );
    } catch (error) {
      if (error instanceof StoreReset) throw error;
      if (sent === undefined || error instanceof ClientOfflineError || error instanceof Refused) {
        throw error instanceof Refused ? new Error(error.message) : unavailable(error);
      }
      throw new Unconfirmed(
        `the shared store (Redis) did not confirm it (${(error as Error).message})`,
        sent,
      );
    }
  }

  async #stored(
    room: string,
    draft: Draft,
    epoch: string,
    [id, writes, duplicate]: [number, number, number],
  ) {
    if (duplicate) {
      const [entry] = this.#fresh(
        room,
        await this.link.command.xRange(`natter:log:${room}`, `${id}-0`, `${id}-0`),
      );
      return {
        ...(entry ?? { room, id: Number(id), ...draft }),
        duplicate: true as const,
        epoch,
      };
    }
    this.seen(Number(writes));
    return { room, id: Number(id), ...draft, mark: Number(writes), epoch };
  }

  #failed(error: unknown): never {
    if (error instanceof ClientOfflineError) throw error;
    if (!(error instanceof ErrorReply)) throw error;
    if (/NATTER_EPOCH|NATTER_BACK/.test(error.message)) {
      // Redis lost natter's data or went back in time: the hub refreshes the epoch (a new one),
      // rebases, and stores the message again under it.
      throw new StoreReset("the shared store was reset (it lost data)");
    }
    throw new Refused(`the shared store refused it: ${error.message}`);
  }

  async latest(room: string, limit: number, before?: number): Promise<Message[]> {
    if (limit <= 0 || (before !== undefined && before <= 1)) return [];
    const end = before === undefined ? "+" : String(before - 1);
    const [entries, gone, head] = await this.#read(() =>
      Promise.all([
        this.link.command.xRevRange(`natter:log:${room}`, end, "-", { COUNT: limit }),
        this.link.command.hGetAll(`natter:gone:${room}`),
        this.head(room),
      ])
    );
    const messages = this.#fresh(room, entries).reverse();
    // Deleted ones are gone from the stream: their tombstones go back in their places.
    const top = before === undefined ? head : before - 1;
    const bottom = messages.length === limit
      ? messages[0]!.id
      : Math.max(1, head - this.#retention.maxCount + 1);
    return this.#withGone(room, messages, gone, bottom, top).slice(-limit);
  }

  async remove(room: string, id: number): Promise<Message | undefined> {
    const log = `natter:log:${room}`;
    const [entry] = this.#fresh(
      room,
      await this.#read(() => this.link.command.xRange(log, `${id}-0`, `${id}-0`)),
    );
    if (!entry) return undefined;
    const mark = JSON.stringify({ ts: entry.ts, from: entry.from });
    await this.#read(() =>
      this.link.command.multi().hSet(`natter:gone:${room}`, String(id), mark).xDel(log, `${id}-0`)
        .exec()
    );
    return tombstone(entry);
  }

  /** `messages` (oldest first) with the tombstones of deleted ids from `bottom` to `top` put back. */
  #withGone(
    room: string,
    messages: Message[],
    gone: Record<string, string>,
    bottom: number,
    top: number,
  ): Message[] {
    const { maxAgeMs } = this.#retention;
    const cutoff = maxAgeMs > 0 ? this.#now() - maxAgeMs : -Infinity;
    const stones: Message[] = [];
    for (const [key, value] of Object.entries(gone)) {
      const id = Number(key);
      if (!(id >= bottom && id <= top)) continue;
      const { ts, from } = JSON.parse(value) as { ts: number; from: string };
      if (ts >= cutoff) stones.push(tombstone({ room, id, ts, from, text: "" }));
    }
    if (stones.length === 0) return messages;
    return [...messages, ...stones].sort((a, b) => a.id - b.id);
  }

  async after(room: string, since: number): Promise<Recovery> {
    // One connection runs these in order: the entries reach at least to `head`.
    const [head, entries] = await this.#read(() =>
      Promise.all([
        this.head(room),
        this.link.command.xRange(`natter:log:${room}`, String(since + 1), "+"),
      ])
    );
    if (since > head || since < 0) return { messages: [], complete: false };
    const gone = await this.#read(() => this.link.command.hGetAll(`natter:gone:${room}`));
    const bottom = Math.max(since + 1, head - this.#retention.maxCount + 1);
    const messages = this.#withGone(room, this.#fresh(room, entries), gone, bottom, head);
    // Complete when nothing came after `since`, or the first one kept is the very next id.
    return { messages, complete: since === head || messages[0]?.id === since + 1 };
  }

  async head(room: string): Promise<number> {
    const value = await this.#read(() => this.link.command.get(`natter:seq:${room}`));
    return value === null ? 0 : Number(value);
  }

  async rulings(): Promise<Ruling[]> {
    const all = await this.#read(() => this.link.command.hGetAll(RULINGS_KEY));
    return Object.values(all).map((body) => JSON.parse(body) as Ruling);
  }

  async rule(ruling: Ruling): Promise<void> {
    await this.#read(() =>
      this.link.command.hSet(RULINGS_KEY, rulingId(ruling), JSON.stringify(ruling))
    );
  }

  async lift(id: string): Promise<void> {
    await this.#read(() => this.link.command.hDel(RULINGS_KEY, id));
  }

  /** Nothing of its own to release: the link is closed with the broker. */
  close(): void {}

  async #read<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await this.link.answer(run);
    } catch (error) {
      throw unavailable(error);
    }
  }

  /** Stream entries as messages, without those past the age limit. */
  #fresh(room: string, entries: { id: string; message: Record<string, string> }[]): Message[] {
    const { maxAgeMs } = this.#retention;
    const cutoff = maxAgeMs > 0 ? this.#now() - maxAgeMs : -Infinity;
    const messages: Message[] = [];
    for (const { id, message: fields } of entries) {
      const ts = Number(fields.ts);
      if (ts < cutoff) continue;
      const message: Message = {
        room,
        id: Number.parseInt(id, 10),
        ts,
        from: fields.from ?? "",
        text: fields.text ?? "",
      };
      if (fields.action) message.action = true;
      messages.push(message);
    }
    return messages;
  }
}
