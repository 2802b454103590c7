/**
 * A real Redis Cluster for tests: six redis-server processes (three masters, each with one
 * replica) on free ports, joined by `redis-cli --cluster create`. It is tuned so that a killed
 * master is replaced in a few seconds rather than the default fifteen or more, so a test can crash
 * a master mid-chat and watch its replica take over. Guard tests with `haveRedis()` from
 * redis_server.ts: redis-cli comes in the same package as redis-server.
 */

import { freePort, RedisServer } from "./redis_server.ts";

const MASTERS = 3;
const SLOTS = 16384;

/**
 * How long a node may be silent before it is suspected; failover follows in about twice this.
 * Short for tests, which kill masters on purpose; a benchmark that loads the machine passes a
 * longer one, so that a node slowed by the load is not failed over.
 */
const NODE_TIMEOUT_MS = 1000;

/** One line of `CLUSTER NODES`, as much of it as the harness needs. */
interface NodeLine {
  id: string;
  /** A replica's master's id; "-" for a master. */
  master: string;
  port: number;
  flags: string[];
  /** Inclusive slot ranges; importing/migrating entries (`[...]`) are left out. */
  slots: [number, number][];
}

export class RedisCluster {
  readonly #servers: RedisServer[];
  readonly #dir: string;
  /** Nodes killed by killMaster: never asked anything again. */
  readonly #down = new Set<number>();
  /** For each killed master, a slot it served: whoever serves it next is its successor. */
  readonly #orphaned = new Map<number, number>();

  private constructor(servers: RedisServer[], dir: string) {
    this.#servers = servers;
    this.#dir = dir;
  }

  /** Every node's address, masters and replicas alike (a client may be given any of them). */
  get urls(): string[] {
    return this.#servers.map((server) => server.url);
  }

  /** Every node, masters and replicas alike, killed ones included. */
  get servers(): readonly RedisServer[] {
    return this.#servers;
  }

  /** The first node's address; once killMaster has killed it, only `urls` still reaches the rest. */
  get url(): string {
    return this.#servers[0]!.url;
  }

  /**
   * Starts six nodes, joins them into three shards and returns once every node says the cluster
   * is ok and every replica has finished its first sync (before that, WAIT would count 0).
   */
  static async start({ nodeTimeoutMs = NODE_TIMEOUT_MS } = {}): Promise<RedisCluster> {
    const dir = await Deno.makeTempDir({ prefix: "natter-cluster-" });
    // Each node also listens on a bus port, by default its port + 10000: for an ephemeral port
    // that can be past 65535 or taken, so the bus ports are chosen free too.
    const ports = new Set<number>();
    while (ports.size < 4 * MASTERS) ports.add(freePort());
    const [clientPorts, busPorts] = [
      [...ports].slice(0, 2 * MASTERS),
      [...ports].slice(2 * MASTERS),
    ];
    const started = await Promise.allSettled(clientPorts.map(async (port, i) => {
      // One directory per node: a replica writes the snapshot it syncs from to its own dump.rdb.
      await Deno.mkdir(`${dir}/${port}`);
      return RedisServer.start(port, `${dir}/${port}`, [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        `${dir}/nodes-${port}.conf`,
        "--cluster-port",
        String(busPorts[i]),
        "--cluster-node-timeout",
        String(nodeTimeoutMs),
        // A replica takes over however long it has been cut off: a test wants a failover, not
        // a judgement on whether the replica's data is fresh enough.
        "--cluster-replica-validity-factor",
        "0",
        // As docs/DEPLOY.md advises: a shard without a master stops its own slots, not all.
        "--cluster-require-full-coverage",
        "no",
        // The first sync otherwise waits 5 s for more replicas to share one snapshot.
        "--repl-diskless-sync-delay",
        "0",
      ]);
    }));
    const servers = started.flatMap((result) =>
      result.status === "fulfilled" ? [result.value] : []
    );
    const cluster = new RedisCluster(servers, dir);
    try {
      for (const result of started) if (result.status === "rejected") throw result.reason;
      const create = await new Deno.Command("redis-cli", {
        args: [
          "--cluster",
          "create",
          ...clientPorts.map((port) => `127.0.0.1:${port}`),
          "--cluster-replicas",
          "1",
          "--cluster-yes",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!create.success) {
        const decoder = new TextDecoder();
        throw new Error(
          `redis-cli --cluster create failed:\n${decoder.decode(create.stdout)}` +
            decoder.decode(create.stderr),
        );
      }
      await cluster.#waitFor("the cluster to form", async () => {
        if (!await cluster.#allOk(2 * MASTERS)) return false;
        let synced = 0;
        for (const server of servers) {
          const info = fields(bulk(await server.command("INFO", "replication")));
          if (info.role === "slave" && info.master_link_status === "up") synced++;
        }
        return synced === MASTERS;
      });
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  /** The node that masters the slot of this key, as the live nodes see it now. */
  async masterOf(key: string): Promise<{ port: number; server: RedisServer }> {
    const asked = this.#live()[0]!;
    const slot = Number(/^:(\d+)\r\n/.exec(await asked.command("CLUSTER", "KEYSLOT", key))?.[1]);
    const port = masterOfSlot(nodes(bulk(await asked.command("CLUSTER", "NODES"))), slot);
    if (port === undefined) throw new Error(`no master serves slot ${slot} (key ${key})`);
    return { port, server: this.#server(port) };
  }

  /**
   * The live masters that serve slots, as the first live node sees them now (just after the
   * cluster forms, a node may still list a replica as a master without slots).
   */
  async masters(): Promise<RedisServer[]> {
    const view = nodes(bulk(await this.#live()[0]!.command("CLUSTER", "NODES")));
    return view.filter((node) =>
      node.flags.includes("master") && !node.flags.includes("fail") &&
      node.slots.length > 0 && !this.#down.has(node.port)
    ).map((node) => this.#server(node.port));
  }

  /** The replica of the master on `port`. */
  async replicaOf(port: number): Promise<RedisServer> {
    const view = nodes(bulk(await this.#live()[0]!.command("CLUSTER", "NODES")));
    const master = view.find((node) => node.port === port);
    const replica = view.find((node) => master && node.master === master.id);
    if (!replica) throw new Error(`no replica of ${port}`);
    return this.#server(replica.port);
  }

  /** Kills a node at once (SIGKILL), like a crash; a master's slots are noted for waitForFailover. */
  async killMaster(port: number): Promise<void> {
    await this.#orphan(port);
    await this.#server(port).kill();
  }

  /**
   * Stops a master's process (SIGSTOP) without closing its connections, like a hung host or a
   * partition; its slots are noted for waitForFailover. {@link thaw} lets it go on.
   */
  async freezeMaster(port: number): Promise<void> {
    await this.#orphan(port);
    this.#server(port).freeze(true);
  }

  /** Lets a frozen node go on; it comes back as a replica of the node that took over. */
  thaw(port: number): void {
    this.#server(port).freeze(false);
    this.#down.delete(port);
  }

  /**
   * A planned failover (`CLUSTER FAILOVER` on the master's replica): the two swap roles with no
   * connection broken; returns once every node agrees on the new master's port.
   */
  async switchOver(port: number): Promise<number> {
    const replica = await this.replicaOf(port);
    const slot = nodes(bulk(await this.#server(port).command("CLUSTER", "NODES")))
      .find((node) => node.port === port)?.slots[0]?.[0];
    if (slot === undefined) throw new Error(`${port} serves no slots`);
    await replica.command("CLUSTER", "FAILOVER");
    await this.#waitFor(`${replica.port} to take over from ${port}`, async () => {
      for (const server of this.#live()) {
        const view = nodes(bulk(await server.command("CLUSTER", "NODES")));
        if (masterOfSlot(view, slot) !== replica.port) return false;
      }
      return await this.#allOk(2 * MASTERS);
    });
    return replica.port;
  }

  /** Notes a slot of the master on `port` for waitForFailover, and stops asking it anything. */
  async #orphan(port: number): Promise<void> {
    const served = nodes(bulk(await this.#server(port).command("CLUSTER", "NODES")))
      .find((node) => node.port === port)?.slots[0];
    if (served) this.#orphaned.set(port, served[0]);
    this.#down.add(port);
  }

  /**
   * Waits until a replica has taken over the slots of a master killed by killMaster, every live
   * node agrees on it and says the cluster is ok again; returns the new master's port.
   */
  async waitForFailover(oldPort: number): Promise<number> {
    const slot = this.#orphaned.get(oldPort);
    if (slot === undefined) throw new Error(`${oldPort} is not a master killed by killMaster`);
    let successor: number | undefined;
    await this.#waitFor(`a replica to take over from ${oldPort}`, async () => {
      const seen = new Set<number | undefined>();
      for (const server of this.#live()) {
        seen.add(masterOfSlot(nodes(bulk(await server.command("CLUSTER", "NODES"))), slot));
      }
      [successor] = seen;
      return seen.size === 1 && successor !== undefined && successor !== oldPort &&
        await this.#allOk(2 * MASTERS);
    });
    return successor!;
  }

  /** Kills every node and removes their files. */
  async stop(): Promise<void> {
    await Promise.all(this.#servers.map((server) => server.kill()));
    await Deno.remove(this.#dir, { recursive: true });
  }

  #live(): RedisServer[] {
    return this.#servers.filter((server) => !this.#down.has(server.port));
  }

  #server(port: number): RedisServer {
    const server = this.#servers.find((server) => server.port === port);
    if (!server) throw new Error(`${port} is not a node of this cluster`);
    return server;
  }

  /** Whether every live node says the cluster is ok: every slot served, three shards, `known` nodes. */
  async #allOk(known: number): Promise<boolean> {
    for (const server of this.#live()) {
      const info = fields(bulk(await server.command("CLUSTER", "INFO")));
      if (
        info.cluster_state !== "ok" || info.cluster_slots_ok !== String(SLOTS) ||
        info.cluster_size !== String(MASTERS) || info.cluster_known_nodes !== String(known)
      ) return false;
    }
    return true;
  }

  /** Polls until true; a node that answers oddly or not at all meanwhile is just not ready. */
  async #waitFor(what: string, ready: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 20 * NODE_TIMEOUT_MS;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        if (await ready()) return;
      } catch (error) {
        last = error;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
  }
}

/**
 * The body of a bulk-string reply. RedisServer.command reads once; a reply cut short, or an
 * error, throws rather than being parsed as if whole.
 */
function bulk(reply: string): string {
  const header = /^\$(\d+)\r\n/.exec(reply);
  const body = header ? reply.slice(header[0].length, header[0].length + Number(header[1])) : "";
  if (!header || body.length !== Number(header[1])) {
    throw new Error(`unexpected reply: ${reply.slice(0, 200)}`);
  }
  return body;
}

/** `name:value` lines (INFO, CLUSTER INFO) as a record. */
function fields(text: string): Record<string, string> {
  const record: Record<string, string> = {};
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) record[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return record;
}

/** `CLUSTER NODES`: `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...` */
function nodes(text: string): NodeLine[] {
  return text.trim().split("\n").map((line) => {
    const [id = "", address = "", flags = "", master = "", , , , , ...slots] = line.trim().split(
      " ",
    );
    return {
      id,
      master,
      port: Number(/:(\d+)@/.exec(address)?.[1]),
      flags: flags.split(","),
      slots: slots.filter((slot) => !slot.startsWith("[")).map((slot) => {
        const [from, to = from] = slot.split("-").map(Number) as [number, number?];
        return [from, to];
      }),
    };
  });
}

/** The port of the healthy master serving a slot, in one node's view; undefined if none. */
function masterOfSlot(view: NodeLine[], slot: number): number | undefined {
  return view.find((node) =>
    node.flags.includes("master") && !node.flags.includes("fail") &&
    !node.flags.includes("fail?") && node.slots.some(([from, to]) => from <= slot && slot <= to)
  )?.port;
}
