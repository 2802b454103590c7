/**
 * The link to Redis that the Redis store (lib/store/redis_store.ts) and broker (lib/cluster/redis_broker.ts)
 * share: two connections (commands, and the subscription), whether they work, and a deadline on
 * every command.
 *
 * When Redis goes away the link reconnects by itself with backoff (up to 2 s apart). Until
 * it is back, appends fail at once (nothing is acknowledged that was not stored), history
 * reads fail, and events reach only this instance's own clients.
 */

import { createClient, type RedisClientType } from "redis";
import type { Logger } from "../base/log.ts";

/** Redis could not be used at start; the message says why. */
export class RedisError extends Error {
  override name = "RedisError";
}

/** Longest wait between reconnection attempts. */
const MAX_BACKOFF_MS = 2000;
/** Attempts at start before natter gives up with a message (later, it never gives up). */
const START_ATTEMPTS = 4;

/** A command that gets no answer for this long makes the link count as down (a stalled Redis). */
const ANSWER_MS = 2000;
/** How often the link checks that Redis still answers. */
const WATCH_MS = 1000;

/** Both connections to Redis, and whether they work. */
/** Whether the link reaches Redis, and why not when it does not (a broker's status is this). */
export interface LinkStatus {
  up: boolean;
  reason?: string;
}

export class RedisLink {
  /** Whether it is a Redis Cluster (see lib/store/redis_store.ts). */
  readonly cluster: boolean = false;
  readonly command: RedisClientType;
  readonly subscriber: RedisClientType;
  #up = false;
  #reason = "not connected yet";
  #started = false;
  /** Set while a ping goes unanswered: the connection is open but Redis does not answer. */
  #stalled = false;
  #watch: ReturnType<typeof setInterval> | undefined;
  #onStatus: ((status: LinkStatus) => void) | undefined;

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
    // A Redis Cluster node would take some of a room's keys and refuse the rest (CROSSSLOT,
    // MOVED) message by message: said once, at start, instead.
    const info = await link.command.info("cluster").catch(() => "");
    if (/^cluster_enabled:1/m.test(info)) {
      link.#destroy();
      throw new RedisError(
        `${redact(url)} is a Redis Cluster node, and natter does not support Redis Cluster yet ` +
          "(docs/SCALING.md): give it a standalone Redis (or one primary with replicas)",
      );
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

  /** Publishes on a channel (sharded pub/sub on a cluster: the channel's shard carries it). */
  publish(channel: string, message: string): Promise<unknown> {
    return this.command.publish(channel, message);
  }

  /** Hears a channel from now on (the promise settles once Redis confirmed it). */
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown> {
    return this.subscriber.subscribe(channel, listener);
  }

  unsubscribe(channel: string, listener: (message: string) => void): Promise<unknown> {
    if (!this.subscriber.isOpen) return Promise.resolve(); // gone, and the subscription with it
    return this.subscriber.unsubscribe(channel, listener);
  }

  /** Whether commands can be sent now (they may still wait on a stalled Redis). */
  get connected(): boolean {
    return this.command.isReady;
  }

  get status(): LinkStatus {
    return this.#up ? { up: true } : { up: false, reason: this.#reason };
  }

  set onStatus(listener: (status: LinkStatus) => void) {
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
