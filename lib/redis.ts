/**
 * Many instances, one chat: a Redis store (per-room ids and history in Redis Streams) and a
 * Redis broker (pub/sub), over one link of two connections (commands, and the subscription).
 *
 * Keys, for room R: `natter:seq:R` (its last id, INCR'd), `natter:log:R` (a stream whose
 * entry ids are `<id>-0`, trimmed to the retention count), and `natter:epoch`. Events travel
 * on the channel `natter:events` as JSON envelopes.
 *
 * When Redis goes away the link reconnects by itself with backoff (up to 2 s apart). Until
 * it is back, appends fail at once (nothing is acknowledged that was not stored), history
 * reads fail, and events reach only this instance's own clients.
 */

import { ClientOfflineError, createClient, type RedisClientType } from "redis";
import type { Broker, BrokerStatus, Envelope } from "./broker.ts";
import {
  DEFAULT_RETENTION,
  type Draft,
  type HistoryStore,
  type Message,
  type Recovery,
  type Retention,
} from "./history.ts";
import type { Logger } from "./log.ts";

/** Redis could not be used at start; the message says why. */
export class RedisError extends Error {
  override name = "RedisError";
}

/** The channel every instance publishes its envelopes on. */
export const EVENTS_CHANNEL = "natter:events";
const EPOCH_KEY = "natter:epoch";
/** Longest wait between reconnection attempts. */
const MAX_BACKOFF_MS = 2000;
/** Attempts at start before natter gives up with a message (later, it never gives up). */
const START_ATTEMPTS = 4;

/** A command that gets no answer for this long makes the link count as down (a stalled Redis). */
const ANSWER_MS = 2000;
/** How often the link checks that Redis still answers. */
const WATCH_MS = 1000;

/**
 * Stores a message under the room's next id, only while natter's epoch key still holds the
 * epoch this instance works in: a Redis that was emptied (restart without persistence,
 * FLUSHALL) must not hand out ids again under the old epoch.
 */
const APPEND = `
if redis.call('GET', KEYS[3]) ~= ARGV[6] then return redis.error_reply('NATTER_EPOCH changed') end
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0',
  'ts', ARGV[2], 'from', ARGV[3], 'text', ARGV[4], 'action', ARGV[5])
return id
`;

/** Both connections to Redis, and whether they work. */
export class RedisLink {
  readonly command: RedisClientType;
  readonly subscriber: RedisClientType;
  #up = false;
  #reason = "not connected yet";
  #started = false;
  /** Set while a ping goes unanswered: the connection is open but Redis does not answer. */
  #stalled = false;
  #watch: ReturnType<typeof setInterval> | undefined;
  #onStatus: ((status: BrokerStatus) => void) | undefined;

  private constructor(readonly url: string, readonly log: Logger) {
    const reconnectStrategy = (retries: number, cause: Error) => {
      if (!this.#started && retries >= START_ATTEMPTS) return cause;
      return Math.min(100 * 2 ** retries, MAX_BACKOFF_MS);
    };
    this.command = createClient({
      url,
      disableOfflineQueue: true,
      socket: { reconnectStrategy, connectTimeout: 5000 },
    });
    this.subscriber = this.command.duplicate();
    for (const client of [this.command, this.subscriber]) {
      // Without an error listener the client stops reconnecting; the listener is the report.
      client.on("error", (error: Error) => this.#update(error.message));
      client.on("ready", () => this.#update());
      client.on("reconnecting", () => this.#update("reconnecting"));
    }
  }

  /** Connects both clients; throws {@link RedisError} when Redis cannot be reached at start. */
  static async open(url: string, log: Logger): Promise<RedisLink> {
    let link: RedisLink;
    try {
      link = new RedisLink(url, log);
    } catch (error) {
      throw new RedisError(`bad Redis URL ${JSON.stringify(url)}: ${(error as Error).message}`);
    }
    try {
      await link.command.connect();
      await link.subscriber.connect();
    } catch (error) {
      link.#destroy();
      throw new RedisError(`cannot reach Redis at ${redact(url)}: ${(error as Error).message}`);
    }
    link.#started = true;
    link.#update();
    link.#watch = setInterval(() => link.#check(), WATCH_MS);
    return link;
  }

  /** Pings Redis; no answer within {@link ANSWER_MS} counts as down until one comes. */
  async #check(): Promise<void> {
    if (!this.command.isReady) return;
    try {
      await withTimeout(this.command.ping(), ANSWER_MS);
      if (this.#stalled) {
        this.#stalled = false;
        this.#update();
      }
    } catch (error) {
      if (this.#stalled || !this.command.isReady) return;
      this.#stalled = true;
      this.#update(`Redis does not answer (${(error as Error).message})`);
    }
  }

  /** Runs a command with a deadline, so that a stalled Redis fails requests instead of holding them. */
  answer<T>(command: () => Promise<T>): Promise<T> {
    if (this.#stalled) return Promise.reject(new Error(`Redis does not answer: ${this.#reason}`));
    return withTimeout(command(), ANSWER_MS);
  }

  get status(): BrokerStatus {
    return this.#up ? { up: true } : { up: false, reason: this.#reason };
  }

  set onStatus(listener: (status: BrokerStatus) => void) {
    this.#onStatus = listener;
  }

  /** Re-reads readiness; logs and reports only changes, not every failed attempt. */
  #update(reason?: string): void {
    const up = this.command.isReady && this.subscriber.isReady && !this.#stalled;
    if (!up && reason) this.#reason = reason;
    if (up === this.#up || !this.#started) {
      if (this.#started || up) this.#up = up;
      return;
    }
    this.#up = up;
    if (up) this.log.info("shared bus up", { broker: "redis", url: redact(this.url) });
    else {
      this.log.warn("shared bus down: serving local clients only, retrying", {
        broker: "redis",
        reason: this.#reason,
      });
    }
    this.#onStatus?.(this.status);
  }

  /** Closes both connections; never waits on a Redis that is gone. */
  async close(): Promise<void> {
    clearInterval(this.#watch);
    await Promise.all([this.command, this.subscriber].map(async (client) => {
      if (!client.isOpen) return;
      if (!client.isReady) return client.destroy();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => timer = setTimeout(resolve, 1000));
      try {
        await Promise.race([client.close(), late]);
      } finally {
        clearTimeout(timer);
        if (client.isOpen) client.destroy();
      }
    }));
  }

  #destroy(): void {
    for (const client of [this.command, this.subscriber]) if (client.isOpen) client.destroy();
  }
}

/** Rejects when `promise` has not settled within `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** The URL without its password, for logs and messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
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
  #epoch: string;

  private constructor(readonly link: RedisLink, epoch: string, retention: Partial<Retention>) {
    this.#epoch = epoch;
    this.#retention = { ...DEFAULT_RETENTION, ...retention };
    this.#now = this.#retention.now ?? Date.now;
  }

  /** Connects the store to the shared epoch (setting it, for the first instance). */
  static async open(link: RedisLink, retention: Partial<Retention> = {}): Promise<RedisStore> {
    return new RedisStore(link, await RedisStore.#sharedEpoch(link), retention);
  }

  static async #sharedEpoch(link: RedisLink): Promise<string> {
    await link.command.set(EPOCH_KEY, crypto.randomUUID(), { condition: "NX" });
    const epoch = await link.command.get(EPOCH_KEY);
    if (epoch === null) throw new RedisError("Redis did not keep natter's epoch key");
    return epoch;
  }

  get epoch(): string {
    return this.#epoch;
  }

  /** After an outage: a Redis that came back empty gets a new epoch, which every instance adopts. */
  async refresh(): Promise<void> {
    const epoch = await this.link.answer(() => RedisStore.#sharedEpoch(this.link));
    if (epoch === this.#epoch) return;
    this.link.log.warn("Redis has lost natter's data: a new epoch, message ids start again", {
      from: this.#epoch,
      to: epoch,
    });
    this.#epoch = epoch;
  }

  async append(room: string, draft: Draft): Promise<Message> {
    let id;
    try {
      id = await this.link.answer(() =>
        this.link.command.eval(APPEND, {
          keys: [`natter:seq:${room}`, `natter:log:${room}`, EPOCH_KEY],
          arguments: [
            String(this.#retention.maxCount),
            String(draft.ts),
            draft.from,
            draft.text,
            draft.action ? "1" : "",
            this.#epoch,
          ],
        })
      );
    } catch (error) {
      if (/NATTER_EPOCH/.test(String((error as Error).message))) {
        // Redis lost natter's data: adopt the new epoch (the hub rebases when the bus is up).
        await this.refresh().catch(() => {});
        throw new Error("the shared store was reset; send it again");
      }
      throw unavailable(error);
    }
    return { room, id: Number(id), ...draft };
  }

  async latest(room: string, limit: number, before?: number): Promise<Message[]> {
    if (limit <= 0 || (before !== undefined && before <= 1)) return [];
    const end = before === undefined ? "+" : String(before - 1);
    const entries = await this.#read(() =>
      this.link.command.xRevRange(`natter:log:${room}`, end, "-", { COUNT: limit })
    );
    return this.#fresh(room, entries).reverse();
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
    const messages = this.#fresh(room, entries);
    // Complete when nothing came after `since`, or the first one kept is the very next id.
    return { messages, complete: since === head || messages[0]?.id === since + 1 };
  }

  async head(room: string): Promise<number> {
    const value = await this.#read(() => this.link.command.get(`natter:seq:${room}`));
    return value === null ? 0 : Number(value);
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

/** Pub/sub between instances; each drops its own echoes. */
export class RedisBroker implements Broker {
  readonly kind = "redis";
  readonly origin = crypto.randomUUID();
  readonly shared = true;
  #handler: ((envelope: Envelope) => void) | undefined;
  #ready: Promise<unknown> | undefined;

  constructor(readonly link: RedisLink) {}

  get status(): BrokerStatus {
    return this.link.status;
  }

  subscribe(
    handler: (envelope: Envelope) => void,
    onStatus?: (status: BrokerStatus) => void,
  ): void {
    this.#handler = handler;
    if (onStatus) this.link.onStatus = onStatus;
    this.#ready = this.link.subscriber.subscribe(EVENTS_CHANNEL, (data: string) => {
      let envelope: Envelope;
      try {
        envelope = JSON.parse(data);
      } catch {
        return;
      }
      if (envelope?.origin !== this.origin) this.#handler?.(envelope);
    });
  }

  /** Resolves once the subscription is in place (events published before it are not heard). */
  ready(): Promise<unknown> {
    return this.#ready ?? Promise.resolve();
  }

  publish(envelope: Envelope): void {
    this.#handler?.(envelope);
    if (!this.link.command.isReady) return;
    this.link.command.publish(EVENTS_CHANNEL, JSON.stringify(envelope)).catch(() => {
      // Lost with the connection: the others resynchronise from heartbeats and the store.
    });
  }

  async close(): Promise<void> {
    this.#handler = undefined;
    await this.link.close();
  }
}
