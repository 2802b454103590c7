/**
 * What a busy room costs an instance that has no member in it (issue 18): two natter instances
 * share one Redis (or, with `--cluster`, a Redis Cluster of three masters and three replicas); on instance A a sender keeps a room busy for its receivers, while instance B
 * holds members only in another room. B's CPU during the load, against B's CPU while idle and A's.
 * With per-room channels B hears none of the busy room's messages.
 *
 *     deno run -A bench/scoping.ts [--rate 2000] [--seconds 5] [--receivers 20] [--root DIR]
 *                                  [--b-receivers N] [--cluster]
 *
 * `--b-receivers N` puts N receivers of the busy room on B too: then B's CPU is what following a
 * room costs an instance (each message once from Redis, then its N deliveries).
 *
 * `--root` runs the natter checked out there (an older commit, say) for a before/after.
 * Needs redis-server on PATH.
 */

import { parseArgs } from "node:util";
import { LineCounter } from "./counter.ts";
import { processCpuSeconds } from "./harness.ts";
import { RawSender } from "./sender.ts";
import {
  haveRedisServer,
  perMessage,
  sharedCounters,
  startInstance,
  startShared,
  stopAll,
} from "./instances.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rate: { type: "string", default: "2000" },
    seconds: { type: "string", default: "5" },
    receivers: { type: "string", default: "20" },
    /** Receivers of the busy room on B as well: what following a room costs an instance. */
    "b-receivers": { type: "string", default: "0" },
    root: { type: "string", default: new URL("..", import.meta.url).pathname },
    cluster: { type: "boolean", default: false },
  },
});
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const RECEIVERS = Number(values.receivers);
const B_RECEIVERS = Number(values["b-receivers"]);
const ROOT = values.root.endsWith("/") ? values.root : `${values.root}/`;

if (!(await haveRedisServer())) {
  console.warn("scoping: SKIPPED, redis-server is not on PATH (apt-get install redis-server)");
  Deno.exit(0);
}

const redis = await startShared(values.cluster);
const natter = () => startInstance(ROOT, redis.url);
const a = await natter();
const b = await natter();
const portA = a.port;
const portB = b.port;
try {
  const receivers = await Promise.all(
    Array.from({ length: RECEIVERS }, () => LineCounter.open(portA, "/?room=busy")),
  );
  const followers = await Promise.all(
    Array.from({ length: B_RECEIVERS }, () => LineCounter.open(portB, "/?room=busy")),
  );
  const quiet = await Promise.all(
    Array.from({ length: 100 }, () => LineCounter.open(portB, "/?room=quiet")),
  );
  const sender = await RawSender.open(portA, "/?room=busy&name=sender");
  await new Promise((r) => setTimeout(r, 1000));

  const cpu = () => [
    processCpuSeconds(a.child.pid),
    processCpuSeconds(b.child.pid),
    redis.pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0),
  ];
  // B at rest, for as long as the load will run.
  const [, idle0, redisIdle0] = cpu();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const [, idle1, redisIdle1] = cpu();

  const [a0, b0, r0] = cpu();
  const nodes0 = redis.pids.map(processCpuSeconds);
  const redis0 = await sharedCounters(redis);
  const lines0 = receivers.reduce((sum, r) => sum + r.lines, 0);
  const started = performance.now();
  let sent = 0;
  while (performance.now() - started < SECONDS * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * RATE);
    for (; sent < due; sent++) sender.send(`message ${sent} for the busy room`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 500));
  const [a1, b1, r1] = cpu();
  const nodes1 = redis.pids.map(processCpuSeconds);
  const redis1 = await sharedCounters(redis);
  const delivered = receivers.reduce((sum, r) => sum + r.lines, 0) - lines0;
  // What each message cost Redis: commands by name, and bytes through it (both directions).
  const perMsg = perMessage(redis0.calls, redis1.calls, sent);
  const result = {
    root: ROOT,
    redis: redis.label,
    messagesPerSecond: RATE,
    seconds: SECONDS,
    deliveredPerSecond: Math.round(delivered / SECONDS),
    aCpu: (a1! - a0!) / SECONDS,
    bCpuUnderLoad: (b1! - b0!) / SECONDS,
    bCpuIdle: (idle1! - idle0!) / SECONDS,
    redisCpu: (r1! - r0!) / SECONDS,
    redisCpuIdle: (redisIdle1! - redisIdle0!) / SECONDS,
    /** Each redis-server's share (on a cluster: the busiest is the room's master). */
    redisCpuByNode: nodes1.map((c, i) => Math.round((c - nodes0[i]!) / SECONDS * 1000) / 1000),
    redisCallsPerMessage: perMsg,
    redisBytesPerMessage: Math.round((redis1.bytes - redis0.bytes) / sent),
  };
  console.log(
    `busy room on A: ${RATE} msg/s to ${RECEIVERS} receivers (${result.deliveredPerSecond} deliveries/s); ` +
      `A's CPU ${
        (result.aCpu * 100).toFixed(1)
      }%; B (${B_RECEIVERS} receivers of it, 100 elsewhere): ` +
      `${(result.bCpuUnderLoad * 100).toFixed(1)}% under load, ${
        (result.bCpuIdle * 100).toFixed(1)
      }% idle`,
  );
  console.log(
    `Redis (${redis.label}): ${(result.redisCpu * 100).toFixed(1)}% of a core (${
      (result.redisCpuIdle * 100).toFixed(1)
    }% idle); per message: ${
      Object.entries(perMsg).map(([name, n]) => `${n} ${name}`).join(", ")
    }; ${result.redisBytesPerMessage} bytes in and out`,
  );
  console.log(JSON.stringify(result));
  await sender.close();
  for (const client of [...receivers, ...followers, ...quiet]) client.close();
} finally {
  await stopAll([a.child, b.child]);
  await redis.stop();
}
