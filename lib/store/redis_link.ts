/**
 * The link to Redis that the Redis store (lib/store/redis_store.ts) and broker (lib/cluster/redis_broker.ts)
 * share: the connections (commands, and the subscription), whether they work, and a deadline on
 * every command. `--redis` may name one Redis or any node of a Redis Cluster: the link asks the
 * node at start and, on a cluster, routes each command to its key's master and carries pub/sub
 * on sharded channels (SPUBLISH/SSUBSCRIBE, Redis 7 or later).
 *
 * When Redis goes away the link reconnects by itself with backoff (up to 2 s apart); when a
 * cluster's master dies, it follows the replica that takes over. Until it is back, appends fail
 * at once (nothing is acknowledged that was not stored), history reads fail, and events reach
 * only this instance's own clients (on a cluster: for the rooms on the shard that is down).
 */

import {
  createClient,
  createCluster,
  ErrorReply,
  type RedisClientType,
  type RedisClusterType,
} from "redis";
import type { Logger } from "../base/log.ts";

import { RedisError } from "./redis_error.ts";

export { RedisError };

/** Longest wait between reconnection attempts. */
const MAX_BACKOFF_MS = 2000;
/** Attempts at start before natter gives up with a message (later, it never gives up). */
const START_ATTEMPTS = 4;

/** A command that gets no answer for this long makes the link count as down (a stalled Redis). */
const ANSWER_MS = 2000;
/** How often the link checks that Redis still answers. */
const WATCH_MS = 1000;
/** On a cluster, how often the link re-reads the slots while a node is unreachable. */
const TOPOLOGY_MS = 250;
/** On a cluster, how long a write waits for a replica to have it before it is acknowledged. */
const REPLICA_MS = 100;

/**
 * The commands the Redis store sends, each about one key's slot: the same calls on one Redis
 * and on a cluster (where each goes to the master of its first key's slot).
 */
export type Commands = Pick<
  RedisClientType,
  "eval" | "evalSha" | "get" | "xRange" | "xRevRange" | "hGetAll" | "hSet" | "hDel"
>;

/** Whether the link reaches Redis, and why not when it does not (a broker's status is this). */
export interface LinkStatus {
  up: boolean;
  reason?: string;
}

type Listener = (message: string) => void;

/** A connection a WAIT can be sent on. */
type WaitClient = { sendCommand(args: string[]): Promise<unknown> };

/**
 * The connections to Redis and whether they work. On one Redis: a command connection and a
 * subscription connection. On a Redis Cluster: the cluster client's connection to every master
 * (and, for sharded pub/sub, a subscription connection to the masters whose channels this
 * instance hears); the link follows a failover itself (see {@link RedisLink.#follow}).
 */
export class RedisLink {
  /** The commands of the store (on a cluster, the cluster client, which routes by key). */
  readonly command: Commands;
  /** One Redis: the command connection, for what only one Redis allows (SCAN). */
  readonly single: RedisClientType | undefined;
  readonly #subscriber: RedisClientType | undefined;
  readonly #nodes: RedisClusterType | undefined;
  /** On a cluster: per master connection, the WAIT out now and the one the writes since share. */
  readonly #waits = new Map<
    WaitClient,
    { current: Promise<boolean>; next: Promise<boolean> | undefined }
  >();
  /** On a cluster: the masters (by address) whose ping is still out. */
  readonly #pinging = new Set<string>();
  /** On a cluster: the channels heard and their listeners, subscribed again after a failover. */
  readonly #channels = new Map<string, Set<Listener>>();
  #up = false;
  #reason = "not connected yet";
  #started = false;
  /** Set while a ping goes unanswered: the connection is open but Redis does not answer. */
  #stalled = false;
  /** On a cluster: the masters (by address) whose last ping went unanswered. */
  #unanswered = new Set<string>();
  #checking = false;
  #watch: ReturnType<typeof setInterval> | undefined;
  #topology: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #onStatus: ((status: LinkStatus) => void) | undefined;

  private constructor(readonly url: string, readonly log: Logger, cluster: boolean) {
    const reconnectStrategy = (retries: number, cause: Error) => {
      if (!this.#started && retries >= START_ATTEMPTS) return cause;
      return Math.min(100 * 2 ** retries, MAX_BACKOFF_MS);
    };
    if (cluster) {
      // The nodes the cluster names are reached with the same credentials and TLS as the first.
      const parsed = new URL(url);
      const nodes = createCluster({
        rootNodes: [{ url }],
        defaults: {
          disableOfflineQueue: true,
          socket: { reconnectStrategy, connectTimeout: 5000, tls: parsed.protocol === "rediss:" },
          ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
          ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
        },
      }) as unknown as RedisClusterType;
      this.#nodes = nodes;
      this.command = nodes as unknown as Commands;
      this.single = undefined;
      nodes.on("error", (error: Error) => this.#update(error.message));
      nodes.on("node-ready", () => this.#update());
      nodes.on("node-reconnecting", () => this.#update("a Redis Cluster node is reconnecting"));
      nodes.on("node-error", (error: Error) => {
        this.#update(`a Redis Cluster node: ${error.message}`);
        this.#topology ??= setTimeout(() => this.#watchTopology(), 0);
      });
      return;
    }
    const command = createClient({
      url,
      disableOfflineQueue: true,
      socket: { reconnectStrategy, connectTimeout: 5000 },
    }) as RedisClientType;
    this.single = command;
    this.command = command;
    this.#subscriber = command.duplicate();
    for (const client of [command, this.#subscriber]) {
      // Without an error listener the client stops reconnecting; the listener is the report.
      client.on("error", (error: Error) => this.#update(error.message));
      client.on("ready", () => this.#update());
      client.on("reconnecting", () => this.#update("reconnecting"));
    }
  }

  /**
   * Connects to one Redis, or to the Redis Cluster that `url`'s node belongs to (found by asking
   * it); throws {@link RedisError} when Redis cannot be reached at start.
   */
  static async open(url: string, log: Logger): Promise<RedisLink> {
    let link: RedisLink;
    try {
      link = new RedisLink(url, log, false);
    } catch (error) {
      throw new RedisError(`bad Redis URL ${JSON.stringify(url)}: ${(error as Error).message}`);
    }
    try {
      await link.single!.connect();
      await link.single!.ping(); // a Redis that wants a password says so here (NOAUTH)
      // A Redis that hides INFO (some managed ones rename it) is taken for a single one.
      const info = await link.single!.info("cluster").catch(() => "");
      if (/^cluster_enabled:1/m.test(info)) {
        // A node whose cluster does not serve every slot would refuse some rooms' messages.
        const state = /^cluster_state:(\w+)/m.exec(
          String(await link.single!.sendCommand(["CLUSTER", "INFO"])),
        )?.[1];
        if (state !== "ok") {
          throw new RedisError(
            `${redact(url)} is a Redis Cluster node, and its cluster is not ok ` +
              `(cluster_state:${state}): ` +
              "natter starts once every slot is served (redis-cli --cluster check)",
          );
        }
        link.#destroy();
        link = new RedisLink(url, log, true);
        await link.#nodes!.connect();
      } else {
        await link.#subscriber!.connect();
      }
    } catch (error) {
      link.#destroy();
      if (error instanceof RedisError) throw error;
      if (error instanceof ErrorReply) {
        throw new RedisError(
          `Redis at ${redact(url)} refused natter: ${error.message}` +
            (/NOAUTH|WRONGPASS/.test(error.message)
              ? " (give the user and password in the URL: redis://USER:PASSWORD@HOST:PORT)"
              : ""),
        );
      }
      throw new RedisError(`cannot reach Redis at ${redact(url)}: ${(error as Error).message}`);
    }
    link.#started = true;
    link.#update();
    link.#watch = setInterval(() => link.#check(), WATCH_MS);
    if (link.cluster) {
      log.info("Redis Cluster", { masters: link.#nodes!.masters.length, url: redact(url) });
    }
    return link;
  }

  /** The connections the link's status is made of (on a cluster, those to every master). */
  #clients(): (RedisClientType | undefined)[] {
    if (!this.#nodes) return [this.single, this.#subscriber];
    return this.#nodes.masters.flatMap((master) => [
      master.client as RedisClientType | undefined,
      // A subscription connection that is being opened is not broken.
      master.pubSub && !master.pubSub.connectPromise
        ? master.pubSub.client as RedisClientType
        : undefined,
    ]).filter((client) => client !== undefined);
  }

  /** Pings Redis; no answer within {@link ANSWER_MS} counts as down until one comes. */
  async #check(): Promise<void> {
    if (this.#nodes) return await this.#checkCluster();
    const client = this.single!;
    if (!client.isReady) return;
    try {
      await withTimeout(client.ping(), ANSWER_MS);
      if (this.#stalled) {
        this.#stalled = false;
        this.#update();
      }
    } catch (error) {
      if (this.#stalled || !client.isReady) return;
      this.#stalled = true;
      this.#update(`Redis does not answer (${(error as Error).message})`);
    }
  }

  /**
   * On a cluster, each master is pinged on its own: one that does not answer (hung, or cut off
   * without its connection breaking) makes the link count as down and the topology be watched,
   * but commands to the other masters go on (each has its own deadline). Then the slots are read
   * again and every channel that no master's subscription carries is subscribed to again.
   */
  async #checkCluster(): Promise<void> {
    if (this.#checking) return; // the last one still waits on a master that does not answer
    this.#checking = true;
    try {
      await this.#checkNodes();
    } finally {
      this.#checking = false;
    }
  }

  async #checkNodes(): Promise<void> {
    const nodes = this.#nodes!;
    const unanswered = new Set<string>();
    await Promise.all(nodes.masters.map(async (master) => {
      const client = master.client;
      if (!client?.isReady) return;
      // A ping still out from an earlier check is the answer: no more queue up behind it.
      if (this.#pinging.has(master.address)) return void unanswered.add(master.address);
      this.#pinging.add(master.address);
      const ping = client.ping().finally(() => this.#pinging.delete(master.address));
      try {
        await withTimeout(ping, ANSWER_MS);
      } catch {
        unanswered.add(master.address);
      }
    }));
    if (this.#closed) return;
    this.#unanswered = unanswered;
    if (unanswered.size > 0) {
      this.#update(`Redis Cluster node ${[...unanswered].join(", ")} does not answer`);
      this.#topology ??= setTimeout(() => this.#watchTopology(), 0);
    }
    await this.#follow();
    this.#update();
  }

  /**
   * node-redis learns where slots went only from a MOVED reply, which a dead or hung master never
   * sends, and a planned failover leaves it subscribed on a node that is a replica now (which
   * unsubscribes it). So the link reads the slots itself (`CLUSTER SLOTS`), from a master that
   * answers, and has node-redis re-read them when they moved (every
   * second, and every {@link TOPOLOGY_MS} while a master is unreachable: see
   * {@link RedisLink.#watchTopology}), and subscribes again to every channel that no master's
   * subscription connection carries any more.
   */
  async #follow(): Promise<void> {
    const nodes = this.#nodes!;
    const live = nodes.masters.find((master) =>
      master.client?.isReady && !this.#unanswered.has(master.address)
    )?.client;
    if (!live || this.#closed) return;
    try {
      // Asked on a connection it has; node-redis's own re-read opens a new one each time, so it
      // runs only when the answer differs from node-redis's table.
      const slots = await withTimeout(live.clusterSlots(), ANSWER_MS);
      const stale = slots.some(({ from, to, master }) => {
        const address = `${master.host}:${master.port}`;
        for (let slot = from; slot <= to; slot++) {
          if (nodes.slots[slot]?.master.address !== address) return true;
        }
        return false;
      });
      // Each step with a deadline: one that waits on a node that is down (node-redis waits for a
      // new master's connection) must not hold up the next check.
      if (stale) await withTimeout(nodes._slots.rediscover(live), ANSWER_MS);
      const heard = new Set<string>();
      for (const master of nodes.masters) {
        const listeners = master.pubSub?.client.getPubSubListeners("SHARDED");
        for (const channel of listeners?.keys() ?? []) heard.add(channel);
      }
      let again = 0;
      for (const [channel, listeners] of this.#channels) {
        if (heard.has(channel) || this.#closed) continue;
        try {
          for (const listener of listeners) {
            await withTimeout(nodes.sSubscribe(channel, listener), ANSWER_MS);
          }
          again++;
        } catch {
          // Its shard is not reachable yet: tried again at the next check.
        }
      }
      if (again > 0) {
        this.log.info("Redis Cluster changed: subscribed again", { channels: again });
      }
    } catch {
      // Tried again at the next check.
    }
  }

  /** While a master's connection is broken or a master does not answer, follows every 250 ms. */
  async #watchTopology(): Promise<void> {
    const broken = () =>
      this.#unanswered.size > 0 || this.#clients().some((client) => !client?.isReady);
    if (this.#closed || !broken()) {
      this.#topology = undefined;
      return;
    }
    await this.#follow();
    this.#update();
    if (this.#closed) return;
    this.#topology = setTimeout(() => this.#watchTopology(), TOPOLOGY_MS);
  }

  /** Runs a command with a deadline, so that a stalled Redis fails requests instead of holding them. */
  answer<T>(command: () => Promise<T>): Promise<T> {
    if (this.#stalled) return Promise.reject(new Error(`Redis does not answer: ${this.#reason}`));
    return withTimeout(command(), ANSWER_MS);
  }

  /**
   * On a cluster: waits (up to {@link REPLICA_MS}) until a replica of `key`'s shard has every
   * write sent to it so far, so that a failover keeps what is acknowledged; resolves to false if
   * none had it in time (the shard has no working replica). On one Redis: true at once.
   */
  async replicated(key: string): Promise<boolean> {
    if (!this.#nodes) return true;
    // The connection to the master of `key`'s slot: the one the write went on, unless the slots
    // moved meanwhile (docs/DEPLOY.md says what that window means).
    const { client } = await this.#nodes._slots.getClientAndSlotNumber(key, false);
    // Group commit: a WAIT covers every write its connection sent before it, whatever the room,
    // and blocks the connection while it waits. While one is out (it may have left before this
    // write), the writes that finish share the next one, sent when it returns: one WAIT per
    // round trip and master, not per message.
    const group = this.#waits.get(client);
    if (!group) return await this.#wait(client);
    return await (group.next ??= group.current.catch(() => {}).then(() => {
      group.next = undefined;
      return this.#wait(client);
    }));
  }

  /** Sends one WAIT on `client`, as its group's current one. */
  #wait(client: WaitClient): Promise<boolean> {
    const current = withTimeout(
      client.sendCommand(["WAIT", "1", String(REPLICA_MS)]),
      ANSWER_MS,
    ).then((count) => Number(count) >= 1);
    const group = this.#waits.get(client);
    if (group) group.current = current;
    else this.#waits.set(client, { current, next: undefined });
    const settled = () => {
      const now = this.#waits.get(client);
      if (now?.current === current && now.next === undefined) this.#waits.delete(client);
    };
    current.then(settled, settled);
    return current;
  }

  /** Publishes on a channel (sharded pub/sub on a cluster: the channel's shard carries it). */
  publish(channel: string, message: string): Promise<unknown> {
    if (this.#nodes) return this.#nodes.sPublish(channel, message);
    return this.single!.publish(channel, message);
  }

  /** Hears a channel from now on (the promise settles once Redis confirmed it). */
  subscribe(channel: string, listener: Listener): Promise<unknown> {
    if (!this.#nodes) return this.#subscriber!.subscribe(channel, listener);
    let listeners = this.#channels.get(channel);
    if (!listeners) this.#channels.set(channel, listeners = new Set());
    listeners.add(listener);
    return this.#nodes.sSubscribe(channel, listener);
  }

  unsubscribe(channel: string, listener: Listener): Promise<unknown> {
    if (!this.#nodes) {
      if (!this.#subscriber!.isOpen) return Promise.resolve(); // gone, and the subscription with it
      return this.#subscriber!.unsubscribe(channel, listener);
    }
    const listeners = this.#channels.get(channel);
    listeners?.delete(listener);
    if (listeners?.size === 0) this.#channels.delete(channel);
    if (!this.#nodes.isOpen) return Promise.resolve();
    return this.#nodes.sUnsubscribe(channel, listener);
  }

  /** Whether commands can be sent now (they may still wait on a stalled Redis). */
  get connected(): boolean {
    // On a cluster, one shard may be down while the others serve: each command says for itself.
    return this.#nodes ? this.#nodes.isOpen : this.single!.isReady;
  }

  /** Whether it is a Redis Cluster (see lib/store/redis_store.ts). */
  get cluster(): boolean {
    return this.#nodes !== undefined;
  }

  /** Whether any of its connections is still open (false once closed). */
  get open(): boolean {
    return [this.single, this.#subscriber, this.#nodes].some((client) => client?.isOpen);
  }

  get status(): LinkStatus {
    return this.#up ? { up: true } : { up: false, reason: this.#reason };
  }

  set onStatus(listener: (status: LinkStatus) => void) {
    this.#onStatus = listener;
  }

  /** Re-reads readiness; logs and reports only changes, not every failed attempt. */
  #update(reason?: string): void {
    const clients = this.#clients();
    const up = clients.length > 0 && clients.every((client) => client?.isReady) &&
      !this.#stalled && this.#unanswered.size === 0;
    if (!up && reason) this.#reason = reason;
    if (up === this.#up || !this.#started) {
      if (this.#started || up) this.#up = up;
      return;
    }
    this.#up = up;
    if (up && this.#nodes) {
      this.log.info("shared bus up", { broker: "redis", masters: this.#nodes.masters.length });
    } else if (up) this.log.info("shared bus up", { broker: "redis", url: redact(this.url) });
    else if (this.#nodes) {
      // One shard down: the others' rooms go on; the failed shard's rooms serve local clients.
      this.log.warn("shared bus degraded: a Redis Cluster shard is unreachable, retrying", {
        broker: "redis",
        reason: this.#reason,
      });
    } else {
      this.log.warn("shared bus down: serving local clients only, retrying", {
        broker: "redis",
        reason: this.#reason,
      });
    }
    this.#onStatus?.(this.status);
  }

  /** Closes every connection; never waits on a Redis that is gone. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watch);
    clearTimeout(this.#topology);
    if (this.#nodes) {
      if (!this.#nodes.isOpen) return;
      if (this.#clients().some((client) => !client?.isReady)) return this.#nodes.destroy();
      return await closeWithin(this.#nodes);
    }
    await Promise.all([this.single!, this.#subscriber!].map((client) => {
      if (!client.isOpen) return;
      if (!client.isReady) return client.destroy();
      return closeWithin(client);
    }));
  }

  #destroy(): void {
    for (const client of [this.single, this.#subscriber, this.#nodes]) {
      if (client?.isOpen) client.destroy();
    }
  }
}

/** Closes a client gracefully, or destroys it when that takes more than a second. */
async function closeWithin(client: { close(): Promise<void>; destroy(): void; isOpen: boolean }) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resolve) => timer = setTimeout(resolve, 1000));
  try {
    await Promise.race([client.close(), late]);
  } finally {
    clearTimeout(timer);
    if (client.isOpen) client.destroy();
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
