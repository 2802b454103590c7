/**
 * One room spread over 1, 2 and 3 natter instances sharing one Redis, or a Redis Cluster with
 * `--cluster` (issue 18): the same receivers, split evenly over the instances, one sender on the
 * first. For each spread:
 *
 * - latency at a moderate rate (one stamped message every `--interval-ms`): p50 and p99 from send
 *   to each receiver, all clocks this process's;
 * - deliveries per second under a heavy rate (`--rate`), and the CPU of each instance and Redis;
 * - Redis commands and bytes per message.
 *
 *     deno run -A bench/spread.ts [--receivers 60] [--interval-ms 5] [--rate 5000] [--seconds 3]
 *                                 [--cluster]
 *
 * Everything runs on this machine's cores, the generator included: the spreads are compared
 * with each other, not with another machine. Needs redis-server on PATH.
 */

import { parseArgs } from "node:util";
import { DelayHistogram, LineCounter } from "./counter.ts";
import { processCpuSeconds } from "./harness.ts";
import {
  haveRedisServer,
  perMessage,
  sharedCounters,
  startInstance,
  startShared,
  stopAll,
} from "./instances.ts";
import { RawSender } from "./sender.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    receivers: { type: "string", default: "60" },
    "interval-ms": { type: "string", default: "5" },
    rate: { type: "string", default: "5000" },
    seconds: { type: "string", default: "3" },
    spreads: { type: "string", default: "1,2,3" },
    /** A Redis Cluster of three masters and three replicas instead of one Redis. */
    cluster: { type: "boolean", default: false },
    out: { type: "string" },
  },
});
const RECEIVERS = Number(values.receivers);
const INTERVAL_MS = Number(values["interval-ms"]);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const SPREADS = values.spreads.split(",").map(Number);
const CLUSTER = values.cluster;
const OUT = values.out ?? `bench/last-spread${CLUSTER ? "-cluster" : ""}.json`;
const ROOT = new URL("..", import.meta.url).pathname;

if (!(await haveRedisServer())) {
  console.warn("spread: SKIPPED, redis-server is not on PATH (apt-get install redis-server)");
  Deno.exit(0);
}

/** Sends stamped messages at `perSecond` for `seconds` on a schedule; resolves with how many. */
async function sendAt(sender: RawSender, perSecond: number, seconds: number): Promise<number> {
  const t0 = performance.now();
  let sent = 0;
  while (performance.now() - t0 < seconds * 1000) {
    const due = Math.floor(((performance.now() - t0) / 1000) * perSecond);
    for (; sent < due; sent++) sender.send(`t=${performance.now().toFixed(3)}`.padEnd(64, " "));
    await new Promise((r) => setTimeout(r, 1));
  }
  return sent;
}

async function measure(spread: number) {
  const redis = await startShared(CLUSTER);
  const instances: Awaited<ReturnType<typeof startInstance>>[] = [];
  try {
    for (let i = 0; i < spread; i++) instances.push(await startInstance(ROOT, redis.url));
    const delays = new DelayHistogram();
    let recording = false;
    const timing = { record: (delay: number) => recording && delays.record(delay) };
    const receivers = await Promise.all(
      Array.from(
        { length: RECEIVERS },
        (_, i) => LineCounter.open(instances[i % spread]!.port, "/?room=spread", timing),
      ),
    );
    const sender = await RawSender.open(instances[0]!.port, "/?room=spread&name=sender");
    await new Promise((r) => setTimeout(r, 500));

    // Moderate: latency (after a warm-up, unrecorded).
    const moderate = 1000 / INTERVAL_MS;
    await sendAt(sender, moderate, 2);
    recording = true;
    await sendAt(sender, moderate, SECONDS);
    await new Promise((r) => setTimeout(r, 300));
    recording = false;

    // Heavy: deliveries per second, CPU, Redis's share.
    const cpus = () => [...instances.map((i) => i.child.pid), ...redis.pids].map(processCpuSeconds);
    const lines = () => receivers.reduce((sum, r) => sum + r.lines, 0);
    const cpu0 = cpus();
    const lines0 = lines();
    const counters0 = await sharedCounters(redis);
    const t0 = performance.now();
    const sent = await sendAt(sender, RATE, SECONDS);
    // Until everything sent is delivered (or nothing more comes for a second, or 10 s): where
    // the instances keep up this takes no time, and deliveries/s is the rate offered; where they
    // do not, the backlog drains, and deliveries/s is what they can do.
    const sentAt = performance.now();
    const expected = sent * RECEIVERS;
    let last = -1;
    let still = 0;
    while (lines() - lines0 < expected && performance.now() - sentAt < 10_000 && still < 10) {
      still = lines() === last ? still + 1 : 0;
      last = lines();
      await new Promise((r) => setTimeout(r, 100));
    }
    const drainSeconds = (performance.now() - sentAt) / 1000;
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = cpus();
    const counters1 = await sharedCounters(redis);
    const delivered = lines() - lines0;
    await sender.close();
    for (const receiver of receivers) receiver.close();
    return {
      spread,
      p50: delays.percentile(0.5),
      p99: delays.percentile(0.99),
      samples: delays.count,
      sent,
      delivered,
      deliveredShare: delivered / expected,
      drainSeconds,
      deliveriesPerSecond: delivered / elapsed,
      instanceCpu: cpu1.slice(0, spread).map((c, i) => (c - cpu0[i]!) / elapsed),
      // Every redis-server's, replicas' included (on a cluster they replay every write).
      redisCpu: cpu1.slice(spread).reduce((sum, c, i) => sum + c - cpu0[spread + i]!, 0) / elapsed,
      redisCallsPerMessage: perMessage(counters0.calls, counters1.calls, sent),
      redisBytesPerMessage: Math.round((counters1.bytes - counters0.bytes) / sent),
    };
  } finally {
    await stopAll(instances.map((i) => i.child));
    await redis.stop();
  }
}

console.log(
  `spread: ${RECEIVERS} receivers of one room split over 1-3 instances sharing ${
    CLUSTER ? "a Redis Cluster (3 masters, 3 replicas)" : "one Redis"
  }; latency at ${1000 / INTERVAL_MS} msg/s, throughput at ${RATE} msg/s`,
);
const runs = [];
for (const spread of SPREADS) {
  const run = await measure(spread);
  runs.push(run);
  console.log(
    `${spread} instance${spread > 1 ? "s" : " "}  p50 ${run.p50.toFixed(2)} ms  p99 ${
      run.p99.toFixed(2)
    } ms  |  ${Math.round(run.deliveriesPerSecond).toLocaleString("en")} deliveries/s (${
      (run.deliveredShare * 100).toFixed(1)
    }% of sent, backlog drained in ${run.drainSeconds.toFixed(1)} s), instances' CPU ${
      run.instanceCpu.map((c) => `${(c * 100).toFixed(0)}%`).join(" + ")
    }, Redis ${(run.redisCpu * 100).toFixed(0)}%  |  Redis per message: ${
      Object.entries(run.redisCallsPerMessage).map(([n, c]) => `${c} ${n}`).join(", ")
    }, ${run.redisBytesPerMessage} bytes`,
  );
}
await Deno.writeTextFile(
  OUT,
  JSON.stringify(
    { date: new Date().toISOString(), receivers: RECEIVERS, cluster: CLUSTER, runs },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${OUT}`);
