/**
 * History in Redis: per-room ids and history in Redis Streams, the same for every instance, over
 * the link's command connection (lib/store/redis_link.ts), on one Redis or a Redis Cluster.
 *
 * Every key of room R carries the hash tag `{R}`, so that a Redis Cluster keeps all of them in
 * the room's slot and one script can touch them together: `natter:{R}:seq` (its last id,
 * INCR'd), `natter:{R}:log` (a stream whose entry ids are `<id>-0`, trimmed to the retention
 * count), `natter:{R}:gone` (tombstones of deleted messages), `natter:{R}:key:E:K` (the id
 * stored under message key K in epoch E, for {@link KEY_WINDOW_MS}) and `natter:{R}:epoch` (the
 * epoch the room's ids were given out under). `natter:epoch` names the deployment's id space and
 * is the authority: a room whose epoch differs from it adopts it (its ids go on; clients drop
 * positions from before), an instance whose epoch differs from it moves to it.
 *
 * A Redis that lost its data, or went back in time (restored from an older snapshot), would hand
 * out ids again. On one Redis the append script sees the first (`natter:epoch` is gone) for
 * every room; in both modes an instance sees the second when a room's last id is below the
 * highest it has seen there. Either way the instance that notices starts a new epoch, which
 * every instance adopts. (On a cluster a script cannot read `natter:epoch`, which lives in
 * another slot: a shard that lost both its master and its replicas is noticed by the instances
 * that saw its rooms' ids, in the rooms they saw; docs/SCALING.md.)
 *
 * Keys of the first layout (`natter:seq:R` and the like, before hash tags) are renamed at start
 * on one Redis (see {@link MIGRATE}); a cluster never held them (natter refused clusters then).
 */

import { ClientOfflineError, ErrorReply } from "redis";
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
  StoreReset,
  tombstone,
  Unconfirmed,
} from "./history.ts";
import { RedisError, type RedisLink } from "./redis_link.ts";

const EPOCH_KEY = "natter:epoch";
/** Moderators' rulings (mutes, bans, topics), by id: a hash, read whole at start. */
const RULINGS_KEY = "natter:rulings";

/** Room `room`'s key `part`, in the room's slot. */
export function roomKey(room: string, part: string): string {
  return `natter:{${room}}:${part}`;
}

/** How many rooms' highest ids an instance remembers, for noticing a Redis gone back in time. */
const HIGHEST_ROOMS = 10_000;

/**
 * Stores a message under the room's next id, only while the room's ids are given out under the
 * epoch this instance works in (and, on one Redis, while `natter:epoch` still holds it: a
 * Redis that was emptied must not hand out ids again under the old epoch), and only while the
 * room's last id is not below the highest this instance has seen there (a Redis restored from an
 * older snapshot must not either). With a key seen within the window, stores nothing and returns
 * the id stored under it.
 *
 * KEYS: seq, log, room epoch, then the message key if there is one, then natter:epoch on one
 * Redis (a cluster refuses keys of other slots, even empty ones, so absent keys are left out).
 * ARGV: maxlen, ts, from, text, action, epoch, highest id seen in the room, key window in
 * seconds, "1" if a message key is given, "1" if natter:epoch is given. Returns
 * {id, duplicate (0/1)}.
 */
const APPEND = `
local key = ARGV[9] == '1' and KEYS[4] or nil
if ARGV[10] == '1' and redis.call('GET', KEYS[#KEYS]) ~= ARGV[6] then
  return redis.error_reply('NATTER_EPOCH changed')
end
local kept = redis.call('GET', KEYS[3])
if kept and kept ~= ARGV[6] then return redis.error_reply('NATTER_ROOM_EPOCH ' .. kept) end
if key then
  local earlier = redis.call('GET', key)
  if earlier then return {tonumber(earlier), 1} end
end
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
if head < tonumber(ARGV[7]) then
  return redis.error_reply('NATTER_BACK in time: last id ' .. head .. ', ' .. ARGV[7] .. ' seen')
end
if not kept then redis.call('SET', KEYS[3], ARGV[6]) end
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0',
  'ts', ARGV[2], 'from', ARGV[3], 'text', ARGV[4], 'action', ARGV[5])
if key then redis.call('SET', key, id, 'EX', ARGV[8]) end
return {id, 0}
`;

/**
 * Deletes a message: its tombstone (when and by whom) in the gone hash, its entry out of the log.
 * KEYS: gone, log. ARGV: id, tombstone.
 */
const REMOVE = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[1] .. '-0')
return 1
`;

/**
 * A room whose ids were given out under an older epoch moves to the current one (its ids go on).
 * KEYS: room epoch. ARGV: the epoch it holds, the current one.
 */
const ADOPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
return 1
`;

/**
 * The deployment's epoch: set when there is none (a new or emptied Redis), replaced when asked
 * to and still the epoch this instance works in (it saw a room go back in time).
 *
 * KEYS: epoch. ARGV: a new epoch, the epoch this instance works in, "1" to replace it.
 */
const EPOCH = `
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
if ARGV[3] == '1' and epoch == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return epoch
`;

/**
 * Renames a room's keys of the first layout to the hash-tagged one, unless the new ones exist
 * (then the old ones are left as they are). One Redis only: the keys are in different slots.
 * KEYS: old seq, log, gone; new seq, log, gone; room epoch. ARGV: the current epoch.
 */
const MIGRATE = `
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 and redis.call('EXISTS', KEYS[i + 3]) == 0 then
    redis.call('RENAME', KEYS[i], KEYS[i + 3])
  end
end
redis.call('SET', KEYS[7], ARGV[1], 'NX')
return 1
`;

/** The SHA-1 Redis knows a script by (EVALSHA), as hex. */
async function sha1(script: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(script));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Redis answered with an error: nothing was stored. */
class Refused extends Error {}

/** The room's ids were given out under another epoch (`kept`): nothing was stored. */
class StaleRoom extends Error {
  constructor(readonly kept: string) {
    super(`the room's epoch is ${kept}`);
  }
}

/** Says "Redis is down" in words a client can act on. */
function unavailable(error: unknown): Error {
  if (error instanceof ClientOfflineError) return new Error("the shared store (Redis) is down");
  return error as Error;
}

/** History in Redis: every instance sees the same ids and messages. */
export class RedisStore implements HistoryStore {
  readonly #retention: Retention;
  readonly #now: () => number;
  /** A Redis Cluster: no script may read `natter:epoch` along with a room's keys. */
  readonly #cluster: boolean;
  #epoch = "";
  /** A room went back in time under the current epoch: the next sync replaces it. */
  #renew = false;
  /** The re-read of the epoch under way (see {@link refresh}). */
  #refreshing: Promise<void> | undefined;
  /** The highest id this instance has seen in each room under its epoch (oldest rooms dropped). */
  #highest = new Map<string, number>();
  /** When a write was last acknowledged that no replica had (see {@link RedisLink.replicated}). */
  #warned = -Infinity;
  /** The append script's SHA-1: sent by name, not in full, once Redis has it. */
  #appendSha = "";

  private constructor(readonly link: RedisLink, retention: Partial<Retention>) {
    this.#cluster = link.cluster;
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
  }

  /** Connects the store to the shared epoch (setting it, for the first instance). */
  static async open(link: RedisLink, retention: Partial<Retention> = {}): Promise<RedisStore> {
    const store = new RedisStore(link, retention);
    store.#appendSha = await sha1(APPEND);
    await store.#sync();
    if (store.#epoch === "") throw new RedisError("Redis did not keep natter's epoch key");
    if (link.single) await store.#migrate();
    return store;
  }

  /** Renames the rooms of the first key layout (see {@link MIGRATE}); logs how many. */
  async #migrate(): Promise<void> {
    const command = this.link.single!;
    const rooms = new Set<string>();
    for (const pattern of ["natter:seq:*", "natter:log:*", "natter:gone:*"]) {
      let cursor = "0";
      do {
        const reply = await command.scan(cursor, { MATCH: pattern, COUNT: 1000 });
        cursor = String(reply.cursor);
        for (const key of reply.keys) rooms.add(String(key).replace(/^natter:[a-z]+:/, ""));
      } while (cursor !== "0");
    }
    for (const room of rooms) {
      await command.eval(MIGRATE, {
        keys: [
          ...["seq", "log", "gone"].map((part) => `natter:${part}:${room}`),
          ...["seq", "log", "gone", "epoch"].map((part) => roomKey(room, part)),
        ],
        arguments: [this.#epoch],
      });
    }
    if (rooms.size > 0) {
      this.link.log.info("moved rooms to the hash-tagged key layout", { rooms: rooms.size });
    }
  }

  /**
   * Reads the deployment's epoch (setting it, or replacing it when a room went back in time; see
   * {@link EPOCH}); true if it changed.
   */
  async #sync(): Promise<boolean> {
    const renew = this.#renew;
    const epoch = await this.link.command.eval(EPOCH, {
      keys: [EPOCH_KEY],
      arguments: [crypto.randomUUID(), this.#epoch, renew ? "1" : ""],
    }) as string;
    this.#renew = false;
    if (epoch === this.#epoch) return false;
    if (this.#epoch !== "") {
      this.link.log.warn(
        renew
          ? "Redis went back in time (restored from an older snapshot?): a new epoch, so that no id is given out twice"
          : "Redis has lost natter's data: a new epoch, message ids start again",
        { from: this.#epoch, to: epoch },
      );
    }
    this.#epoch = epoch;
    this.#highest.clear();
    return true;
  }

  get epoch(): string {
    return this.#epoch;
  }

  /**
   * After an outage: a Redis that came back empty, or went back in time (a room this instance
   * saw has a lower last id now), gets a new epoch, which every instance adopts.
   */
  refresh(): Promise<void> {
    // One re-read at a time: a wave of reconnects, or of messages from another epoch, shares it.
    return this.#refreshing ??= this.#reread().finally(() => this.#refreshing = undefined);
  }

  async #reread(): Promise<void> {
    await this.link.answer(async () => {
      if (await this.#sync() || this.#highest.size === 0) return;
      const seen = [...this.#highest];
      const heads = await Promise.all(
        seen.map(([room]) => this.link.command.get(roomKey(room, "seq"))),
      );
      if (seen.some(([, id], i) => Number(heads[i] ?? 0) < id)) {
        this.#renew = true;
        await this.#sync();
      }
    });
  }

  /** Another instance stored message `id` in `room` under the current epoch. */
  seen(room: string, id: number): void {
    const highest = this.#highest.get(room);
    if (highest !== undefined && highest >= id) return;
    this.#highest.delete(room); // to the end: the rooms seen longest ago go first
    this.#highest.set(room, id);
    if (this.#highest.size > HIGHEST_ROOMS) {
      this.#highest.delete(this.#highest.keys().next().value!);
    }
  }

  /** No member here any more: what was seen in the room no longer matters here. */
  release(room: string): void {
    this.#highest.delete(room);
  }

  async append(room: string, draft: Draft, key?: string): Promise<Stored> {
    let stale: string;
    try {
      return await this.#append(room, draft, key);
    } catch (error) {
      if (!(error instanceof StaleRoom)) throw error;
      stale = error.kept;
    }
    // The room's ids were given out under another epoch: when this instance's epoch is the
    // current one, the room moves to it and the message is stored; otherwise the hub moves
    // this instance to the current one first (and sends again).
    if (await this.#read(() => this.#sync())) {
      throw new StoreReset("the shared store moved to a new epoch");
    }
    await this.#read(() =>
      this.link.command.eval(ADOPT, {
        keys: [roomKey(room, "epoch")],
        arguments: [stale, this.#epoch],
      })
    );
    return await this.#append(room, draft, key);
  }

  async #append(room: string, draft: Draft, key?: string): Promise<Stored> {
    const epoch = this.#epoch;
    const options = {
      keys: [
        roomKey(room, "seq"),
        roomKey(room, "log"),
        roomKey(room, "epoch"),
        // Per epoch: under a new one, an id stored under an old key names another message.
        ...(key === undefined ? [] : [roomKey(room, `key:${epoch}:${key}`)]),
        ...(this.#cluster ? [] : [EPOCH_KEY]),
      ],
      arguments: [
        String(this.#retention.maxCount),
        String(draft.ts),
        draft.from,
        draft.text,
        draft.action ? "1" : "",
        epoch,
        String(this.#highest.get(room) ?? 0),
        String(Math.ceil(KEY_WINDOW_MS / 1000)),
        key === undefined ? "" : "1",
        this.#cluster ? "" : "1",
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
          (reply) => this.#stored(room, draft, epoch, reply as [number, number]),
          (error) => this.#failed(error),
        )
      );
    } catch (error) {
      if (error instanceof StoreReset || error instanceof StaleRoom) throw error;
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
    [id, duplicate]: [number, number],
  ) {
    // On a cluster, acknowledged only once a replica has it: a failover then keeps it. A shard
    // without a working replica (its master just took over) cannot promise that: said, not held.
    // Stored on a master that failed before saying whether a replica has it: may or may not
    // survive the failover, so neither acknowledged nor refused (Unconfirmed).
    const replicated = await this.link.replicated(roomKey(room, "seq")).catch((error) => {
      throw new Error(`no replica confirmed it (${(error as Error).message})`);
    });
    if (!replicated) this.#unreplicated();
    if (duplicate) {
      const [entry] = this.#fresh(
        room,
        await this.link.command.xRange(roomKey(room, "log"), `${id}-0`, `${id}-0`),
      );
      return {
        ...(entry ?? { room, id: Number(id), ...draft }),
        duplicate: true as const,
        epoch,
      };
    }
    if (epoch === this.#epoch) this.seen(room, Number(id));
    return { room, id: Number(id), ...draft, epoch };
  }

  /** Warns (at most once a minute) that a message was acknowledged that no replica had. */
  #unreplicated(): void {
    const now = Date.now();
    if (now - this.#warned < 60_000) return;
    this.#warned = now;
    this.link.log.warn(
      "a Redis Cluster shard has no replica that keeps up: messages are acknowledged from its master alone, and a failover now would lose them",
    );
  }

  #failed(error: unknown): never {
    if (error instanceof ClientOfflineError) throw error;
    if (!(error instanceof ErrorReply)) throw error;
    const stale = /^NATTER_ROOM_EPOCH (\S+)/.exec(error.message);
    if (stale) throw new StaleRoom(stale[1]!);
    if (/NATTER_EPOCH|NATTER_BACK/.test(error.message)) {
      // Redis lost natter's data or went back in time: the hub refreshes the epoch (a new one),
      // rebases, and stores the message again under it.
      if (error.message.startsWith("NATTER_BACK")) this.#renew = true;
      throw new StoreReset("the shared store was reset (it lost data)");
    }
    throw new Refused(`the shared store refused it: ${error.message}`);
  }

  async latest(room: string, limit: number, before?: number): Promise<Message[]> {
    if (limit <= 0 || (before !== undefined && before <= 1)) return [];
    const end = before === undefined ? "+" : String(before - 1);
    const [entries, gone, head] = await this.#read(() =>
      Promise.all([
        this.link.command.xRevRange(roomKey(room, "log"), end, "-", { COUNT: limit }),
        this.link.command.hGetAll(roomKey(room, "gone")),
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
    const log = roomKey(room, "log");
    const [entry] = this.#fresh(
      room,
      await this.#read(() => this.link.command.xRange(log, `${id}-0`, `${id}-0`)),
    );
    if (!entry) return undefined;
    const mark = JSON.stringify({ ts: entry.ts, from: entry.from });
    await this.#read(() =>
      this.link.command.eval(REMOVE, {
        keys: [roomKey(room, "gone"), log],
        arguments: [String(id), mark],
      })
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
    // One deleted since its entry was read (by another instance) goes as its tombstone only.
    const kept = messages.filter((message) => gone[String(message.id)] === undefined);
    return [...kept, ...stones].sort((a, b) => a.id - b.id);
  }

  async after(room: string, since: number, budget?: number): Promise<Recovery> {
    // The deployment is in another epoch than this instance (Redis was emptied while it ran, and
    // another instance noticed first): `since` is not a position in the room's ids now. Nothing
    // is recovered, and the store re-reads its epoch, which the hub then moves to. (A room's own
    // epoch key is no guide: it follows the deployment's only at the room's next message.)
    const current = await this.#read(() => this.link.command.get(EPOCH_KEY));
    if (current !== this.#epoch) {
      this.refresh().catch(() => {});
      return { messages: [], complete: false };
    }
    if (budget !== undefined) return await this.#afterWithin(room, since, budget);
    // One connection runs these in order: the entries reach at least to `head`.
    const [head, entries] = await this.#read(() =>
      Promise.all([
        this.head(room),
        this.link.command.xRange(roomKey(room, "log"), String(since + 1), "+"),
      ])
    );
    return await this.#recovered(room, since, head, entries);
  }

  /** As `after`, reading newest first a page at a time, and none past `budget`. */
  async #afterWithin(room: string, since: number, budget: number): Promise<Recovery> {
    const head = await this.#read(() => this.head(room));
    if (since > head || since < 0) return { messages: [], complete: false };
    const log = roomKey(room, "log");
    const pages: { id: string; message: Record<string, string> }[][] = [];
    let top = "+";
    let spent = 0;
    for (;;) {
      const page = await this.#read(() =>
        this.link.command.xRevRange(log, top, String(since + 1), { COUNT: BUDGET_PAGE })
      );
      for (const entry of page) spent += leastJsonBytes((entry.message.text ?? "").length);
      if (spent > budget) return { messages: [], complete: false };
      pages.unshift(page.reverse());
      if (page.length < BUDGET_PAGE) break;
      // Below the oldest of this page (ids are `N-0`; an exclusive range needs Redis 6.2).
      top = String(Number.parseInt(page[0]!.id, 10) - 1);
    }
    return await this.#recovered(room, since, head, pages.flat());
  }

  /** What `after` answers, from the entries after `since` up to `head`. */
  async #recovered(
    room: string,
    since: number,
    head: number,
    entries: { id: string; message: Record<string, string> }[],
  ): Promise<Recovery> {
    if (since > head || since < 0) return { messages: [], complete: false };
    const gone = await this.#read(() => this.link.command.hGetAll(roomKey(room, "gone")));
    const bottom = Math.max(since + 1, head - this.#retention.maxCount + 1);
    const messages = this.#withGone(room, this.#fresh(room, entries), gone, bottom, head);
    // Complete when nothing came after `since`, or the first one kept is the very next id.
    return { messages, complete: since === head || messages[0]?.id === since + 1 };
  }

  async head(room: string): Promise<number> {
    const value = await this.#read(() => this.link.command.get(roomKey(room, "seq")));
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
