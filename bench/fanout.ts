/**
 * Fan-out at saturation: one sender, N receivers in one room, 64-byte messages as fast as the
 * server takes them. Runs natter and the minimal reference server (bench/reference.ts) back
 * to back, interleaved, several times; reports deliveries per second and the ratio.
 *
 *     deno task bench            (or: deno run -A bench/fanout.ts --receivers 100,1000 --reps 3)
 *
 * The server runs pinned to core 0 and this load generator to core 1 (taskset, when present),
 * and the generator prints its own CPU time so that one can see it was not the bottleneck.
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { CONNECTOR, openClients } from "./clients.ts";
import { LineCounter } from "./counter.ts";
import {
  ALL_SERVERS,
  haveTaskset,
  lines,
  median,
  open,
  pinSelf,
  processCpuSeconds,
  type Server,
  start,
} from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    receivers: { type: "string", default: "100,1000" },
    reps: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    out: { type: "string", default: "bench/last-fanout.json" },
    only: { type: "string" },
  },
});
const RECEIVER_COUNTS = values.receivers.split(",").map(Number);
const REPS = Number(values.reps);
const SECONDS = Number(values.seconds);
const PAYLOAD = "x".repeat(64);
/** Messages in flight: enough to keep the server busy, few enough that it never just queues. */
const windowFor = (receivers: number) => Math.max(4, Math.round(200_000 / receivers));
const SERVERS = ALL_SERVERS.filter((s) => !values.only || s.name === values.only);

async function measure(server: Server, receiverCount: number) {
  const { port, child } = await start(server);
  const path = "/?room=bench";
  const url = `ws://127.0.0.1:${port}${path}`;
  try {
    // One WebSocket receiver paces the sender; the others only count: in the C client
    // (bench/clients.ts) where there is a compiler, else as raw sockets (bench/counter.ts).
    const receivers: WebSocket[] = [await open(url)];
    const counters: LineCounter[] = [];
    const others = CONNECTOR ? await openClients(port, path, receiverCount - 1, 100) : undefined;
    for (let i = 1; !others && i < receiverCount; i += 100) {
      counters.push(
        ...await Promise.all(
          Array.from(
            { length: Math.min(100, receiverCount - i) },
            () => LineCounter.open(port, path),
          ),
        ),
      );
    }
    /** Lines the counting receivers got, and the C client's CPU seconds. */
    const counted = async () =>
      others
        ? await others.report()
        : { lines: counters.reduce((sum, c) => sum + c.lines, 0), cpuSeconds: 0 };
    let delivered = 0;
    // The first receiver paces the sender: at most WINDOW messages in flight. Saturation is
    // the most the server sustains; flooding it instead measures only how it queues.
    let firstSeen = 0;
    let sent = 0;
    let wake: (() => void) | undefined;
    receivers[0]!.onmessage = (e) => {
      const n = lines(e.data);
      delivered += n;
      firstSeen += n;
      if (wake && sent - firstSeen < windowFor(receiverCount) / 2) wake();
    };
    const sender = await open(url);
    await new Promise((r) => setTimeout(r, 300));
    let running = true;
    const pump = (async () => {
      while (running) {
        while (sent - firstSeen < windowFor(receiverCount)) {
          sender.send(PAYLOAD);
          sent++;
        }
        await new Promise<void>((r) => wake = r);
        wake = undefined;
      }
    })();
    await new Promise((r) => setTimeout(r, 500)); // warm up
    delivered = 0;
    const counted0 = await counted();
    const cpu0 = process.cpuUsage();
    const server0 = processCpuSeconds(child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const counted1 = await counted();
    const seconds = (performance.now() - t0) / 1000;
    const serverCpu = (processCpuSeconds(child.pid) - server0) / seconds;
    const count = delivered + counted1.lines - counted0.lines;
    const cpu1 = process.cpuUsage();
    running = false;
    wake?.();
    await Promise.race([pump, new Promise((r) => setTimeout(r, 1000))]);
    for (const ws of [sender, ...receivers]) ws.close();
    for (const counter of counters) counter.close();
    await Promise.all(counters.map((c) => c.done));
    await others?.close();
    // Both generator processes share one core: their CPU adds up.
    const generatorCpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / 1e6 / seconds +
      (counted1.cpuSeconds - counted0.cpuSeconds) / seconds;
    return { deliveriesPerSecond: count / seconds, generatorCpu, serverCpu };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();

const results: Record<string, unknown>[] = [];
console.log(
  `fan-out, ${PAYLOAD.length}-byte messages, ${SECONDS} s per run, ${REPS} reps, taskset: ${haveTaskset}`,
);
for (const receivers of RECEIVER_COUNTS) {
  const runs: Record<string, number[]> = { reference: [], natter: [] };
  const cpus: Record<string, number[]> = { reference: [], natter: [] };
  const serverCpus: Record<string, number[]> = { reference: [], natter: [] };
  for (let rep = 0; rep < REPS; rep++) {
    for (const server of SERVERS) {
      const { deliveriesPerSecond, generatorCpu, serverCpu } = await measure(server, receivers);
      runs[server.name]!.push(deliveriesPerSecond);
      cpus[server.name]!.push(generatorCpu);
      serverCpus[server.name]!.push(serverCpu);
    }
  }
  const reference = median(runs.reference!);
  const natter = median(runs.natter!);
  const row = {
    scenario: `fan-out, ${receivers} receivers`,
    reference,
    natter,
    ratio: natter / reference,
    generatorCpu: { reference: Math.max(...cpus.reference!), natter: Math.max(...cpus.natter!) },
    serverCpu: { reference: median(serverCpus.reference!), natter: median(serverCpus.natter!) },
    runs,
  };
  results.push(row);
  console.log(
    `${row.scenario.padEnd(28)} reference ${
      Math.round(reference).toLocaleString("en").padStart(11)
    }/s` +
      `   natter ${Math.round(natter).toLocaleString("en").padStart(11)}/s   ratio ${
        row.ratio.toFixed(1)
      }x` +
      `   load generator CPU: ${(row.generatorCpu.reference * 100).toFixed(0)}% / ${
        (row.generatorCpu.natter * 100).toFixed(0)
      }%   server CPU: ${(row.serverCpu.reference * 100).toFixed(0)}% / ${
        (row.serverCpu.natter * 100).toFixed(0)
      }%`,
  );
}
await Deno.writeTextFile(
  values.out,
  JSON.stringify({ date: new Date().toISOString(), results }, null, 2) + "\n",
);
console.log(`wrote ${values.out}`);
