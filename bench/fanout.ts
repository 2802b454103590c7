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
import { RawSender } from "./sender.ts";
import {
  ALL_SERVERS,
  BUN_SERVER,
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
    "no-bun": { type: "boolean", default: false },
  },
});
const RECEIVER_COUNTS = values.receivers.split(",").map(Number);
const REPS = Number(values.reps);
const SECONDS = Number(values.seconds);
const PAYLOAD = "x".repeat(64);
/** Messages in flight: enough to keep the server busy, few enough that it never just queues. */
const windowFor = (receivers: number) => Math.max(4, Math.round(200_000 / receivers));
// Bun's native publish joins the runs where Bun is installed (the yardstick: Bun packs
// ~35 frames into each write under load). `--no-bun` leaves it out.
const SERVERS = [...ALL_SERVERS, ...(BUN_SERVER && !values["no-bun"] ? [BUN_SERVER] : [])]
  .filter((s) => !values.only || s.name === values.only);

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
    // A raw sender (bench/sender.ts): the frames of a window refill go out in one write.
    const sender = await RawSender.open(port, path);
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
    for (const ws of receivers) ws.close();
    await sender.close();
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
/** Formats a rate like 4,541,821/s. */
const rate = (value: number) => `${Math.round(value).toLocaleString("en")}/s`;
const percent = (value: number) => `${(value * 100).toFixed(0)}%`;

for (const receivers of RECEIVER_COUNTS) {
  const names = SERVERS.map((server) => server.name);
  const empty = () => Object.fromEntries(names.map((name) => [name, [] as number[]]));
  const runs = empty();
  const cpus = empty();
  const serverCpus = empty();
  for (let rep = 0; rep < REPS; rep++) {
    for (const server of SERVERS) {
      const { deliveriesPerSecond, generatorCpu, serverCpu } = await measure(server, receivers);
      runs[server.name]!.push(deliveriesPerSecond);
      cpus[server.name]!.push(generatorCpu);
      serverCpus[server.name]!.push(serverCpu);
    }
  }
  const medianOf = (name: string) => runs[name]?.length ? median(runs[name]!) : NaN;
  const reference = medianOf("reference");
  const natter = medianOf("natter");
  const bun = medianOf("bun");
  const row = {
    scenario: `fan-out, ${receivers} receivers`,
    reference,
    natter,
    ratio: natter / reference,
    ...(BUN_SERVER && names.includes("bun") ? { bun, natterToBun: natter / bun } : {}),
    generatorCpu: Object.fromEntries(names.map((name) => [name, Math.max(...cpus[name]!)])),
    serverCpu: Object.fromEntries(names.map((name) => [name, median(serverCpus[name]!)])),
    runs,
  };
  results.push(row);
  const each = names.map((name) => `${name} ${rate(medianOf(name)).padStart(13)}`).join("   ");
  console.log(
    `${row.scenario.padEnd(26)} ${each}   natter/reference ${row.ratio.toFixed(1)}x` +
      (names.includes("bun") ? `   natter/bun ${(natter / bun).toFixed(2)}x` : "") +
      `   load generator CPU: ${names.map((n) => percent(row.generatorCpu[n]!)).join(" / ")}` +
      `   server CPU: ${names.map((n) => percent(row.serverCpu[n]!)).join(" / ")}`,
  );
}
await Deno.writeTextFile(
  values.out,
  JSON.stringify({ date: new Date().toISOString(), results }, null, 2) + "\n",
);
console.log(`wrote ${values.out}`);
