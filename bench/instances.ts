/**
 * Several natter instances and one Redis on this machine, for the cross-instance benchmarks
 * (bench/scoping.ts, bench/spread.ts): a Redis without persistence on a free port (or a Redis
 * Cluster of three masters and three replicas), instances started with `--redis`, and Redis's own
 * counters (commands by name, bytes through it).
 */

import { RedisCluster } from "../tests/redis_cluster.ts";
import { BENCH_OPTIONS } from "./harness.ts";

/** Whether redis-server is on PATH; the benchmarks that need it skip without it. */
export async function haveRedisServer(): Promise<boolean> {
  try {
    await new Deno.Command("redis-server", { args: ["--version"], stdout: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts a process and waits for a line matching `ready` on its stdout. */
export async function launch(command: string, args: string[], ready: RegExp) {
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${command} exited: ${text}`);
    text += value;
    const match = ready.exec(text);
    if (match) {
      (async () => {
        while (!(await reader.read()).done);
      })();
      return { child, match };
    }
  }
}

/** A Redis without persistence on a free port. */
export async function startRedis() {
  const port = freePort();
  const { child } = await launch(
    "redis-server",
    ["--port", String(port), "--save", "", "--appendonly", "no"],
    /Ready to accept connections/,
  );
  return { port, child, url: `redis://127.0.0.1:${port}` };
}

/** The Redis the instances share: one server, or a cluster. */
export interface SharedRedis {
  /** What natter's `--redis` is given. */
  url: string;
  /** "one Redis", or "a Redis Cluster (3 masters, 3 replicas)". */
  label: string;
  /** Every redis-server's process id, for CPU time. */
  pids: number[];
  /** The servers whose counters say what natter asked of Redis (on a cluster, the masters). */
  ports: number[];
  stop(): Promise<void>;
}

/** Starts the shared Redis: one server, or (`cluster`) a Redis Cluster that the tests use too. */
export async function startShared(cluster: boolean): Promise<SharedRedis> {
  if (!cluster) {
    const redis = await startRedis();
    return {
      url: redis.url,
      label: "one Redis",
      pids: [redis.child.pid],
      ports: [redis.port],
      stop: () => stopAll([redis.child]),
    };
  }
  // Redis's default node timeout: the tests' short one would fail over a node slowed by the load.
  const redis = await RedisCluster.start({ nodeTimeoutMs: 15_000 });
  const masters = await redis.masters();
  return {
    url: redis.url,
    label: "a Redis Cluster (3 masters, 3 replicas)",
    pids: redis.servers.map((server) => server.pid!),
    ports: masters.map((server) => server.port),
    stop: () => redis.stop(),
  };
}

/** {@link redisCounters}, summed over the shared Redis's servers. */
export async function sharedCounters(
  redis: SharedRedis,
): Promise<{ calls: Record<string, number>; bytes: number }> {
  const total = { calls: {} as Record<string, number>, bytes: 0 };
  for (const port of redis.ports) {
    const { calls, bytes } = await redisCounters(port);
    for (const [name, n] of Object.entries(calls)) total.calls[name] = (total.calls[name] ?? 0) + n;
    total.bytes += bytes;
  }
  return total;
}

/** A natter instance (of the checkout at `root`) on a free port, sharing `redisUrl`. */
export async function startInstance(root: string, redisUrl: string) {
  const { child, match } = await launch(
    Deno.execPath(),
    ["run", "-A", `${root}main.ts`, ...BENCH_OPTIONS, "--redis", redisUrl],
    /listening on http:\/\/[^\s]+:(\d+)\//,
  );
  return { child, port: Number(match[1]) };
}

/** Redis's counters: calls per command, and bytes in and out (INFO commandstats, stats). */
export async function redisCounters(
  port: number,
): Promise<{ calls: Record<string, number>; bytes: number }> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-p", String(port), "INFO", "all"],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const calls: Record<string, number> = {};
  for (const m of text.matchAll(/^cmdstat_(\S+):calls=(\d+)/gm)) calls[m[1]!] = Number(m[2]);
  let bytes = 0;
  for (const key of ["total_net_input_bytes", "total_net_output_bytes"]) {
    bytes += Number(new RegExp(`^${key}:(\\d+)`, "m").exec(text)?.[1] ?? 0);
  }
  return { calls, bytes };
}

/** Commands per message between two readings of {@link redisCounters}. */
export function perMessage(
  before: Record<string, number>,
  after: Record<string, number>,
  messages: number,
): Record<string, number> {
  const result: Record<string, number> = {};
  for (const [name, calls] of Object.entries(after)) {
    const more = calls - (before[name] ?? 0);
    if (more > 0 && name !== "info" && name !== "ping") {
      result[name] = Math.round((more / messages) * 100) / 100;
    }
  }
  return result;
}

/** Kills every process given, and waits for them. */
export async function stopAll(children: Deno.ChildProcess[]): Promise<void> {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
    await child.status;
  }
}
