/**
 * A slow consumer: one client connects and never reads, while ten others receive about
 * 10 MiB/s in all for 20 s (after 5 s of the same load without it, so that the heap has grown
 * to its working size before the window; that growth is the load's, not the slow client's,
 * and the reference has it too). Reports the server's memory growth (RSS, from /proc) and the
 * others' p50/p99 latency, for natter (which drops the stuck client once its unsent bytes pass
 * --max-buffered for 2 s) and the reference server (which buffers for it without bound). A third
 * run, natter under the same load with no stuck client, is the control: what the others' latency
 * is on this machine at this load anyway, so that the stuck client's own share can be told apart.
 *
 *     deno run -A bench/slow.ts [--seconds 20] [--receivers 10] [--mib 10]
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { DelayHistogram, LineCounter } from "./counter.ts";
import { ALL_SERVERS, pinSelf, type Server, start } from "./harness.ts";
import { upgradeRaw } from "./raw.ts";
import { RawSender } from "./sender.ts";

/**
 * natter as the other scenarios run it, but with its default slow-consumer cap (they raise it
 * so that a benchmark client that falls behind is not dropped mid-run).
 */
const SERVERS: Server[] = ALL_SERVERS.map((server) => {
  const at = server.args.indexOf("--max-buffered");
  if (at === -1) return server;
  return { ...server, args: server.args.filter((_, i) => i !== at && i !== at + 1) };
});

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "20" },
    warmup: { type: "string", default: "5" },
    receivers: { type: "string", default: "10" },
    mib: { type: "string", default: "10" },
    out: { type: "string", default: "bench/last-slow.json" },
    /** Leave out the control run (natter with no stuck client). */
    "no-control": { type: "boolean", default: false },
  },
});
const SECONDS = Number(values.seconds);
/** Seconds of the same load before the window, so that both servers' heaps reach working size. */
const WARMUP = Number(values.warmup);
const RECEIVERS = Number(values.receivers);
/** MiB per second delivered to the receivers together. */
const MIB = Number(values.mib);
const PAYLOAD_BYTES = 64;

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** A WebSocket client over raw TCP that completes the handshake and then never reads again. */
async function stuckClient(port: number, path: string): Promise<Deno.TcpConn> {
  return (await upgradeRaw(port, path)).conn;
}

async function measure(server: Server, withStuck: boolean) {
  const { port, child } = await start(server);
  const path = "/?room=slow";
  try {
    const delays = new DelayHistogram();
    let recording = false;
    // Raw sockets that read at once and time the stamps without a string per frame
    // (bench/counter.ts): WebSocket objects cost the generator enough to show in the p99.
    const timing = { record: (delay: number) => recording && delays.record(delay) };
    const receivers = await Promise.all(
      Array.from({ length: RECEIVERS }, () => LineCounter.open(port, path, timing)),
    );
    // Nagle off, as in browsers (bench/sender.ts): Deno's WebSocket client leaves it on.
    const sender = await RawSender.open(port, path);
    let bytes0 = 0;
    await new Promise((r) => setTimeout(r, 300));
    // A line is about 80 bytes at the receivers (name, payload, newline).
    const perSecond = (MIB * 1024 * 1024) / (80 * RECEIVERS);
    const start = performance.now();
    let sent = 0;
    let stuck: Deno.TcpConn | undefined;
    let rssBefore = 0;
    let rssMax = 0;
    let t0 = 0;
    let cpu0 = process.cpuUsage();
    let sampler: ReturnType<typeof setInterval> | undefined;
    while (performance.now() - start < (WARMUP + SECONDS) * 1000) {
      if (!recording && performance.now() - start >= WARMUP * 1000) {
        // The window: the stuck client arrives, memory and latency are measured from here.
        stuck = withStuck ? await stuckClient(port, path) : undefined;
        rssBefore = rssMax = rssMiB(child.pid);
        sampler = setInterval(() => rssMax = Math.max(rssMax, rssMiB(child.pid)), 250);
        cpu0 = process.cpuUsage();
        t0 = performance.now();
        bytes0 = receivers.reduce((sum, r) => sum + r.bytes, 0);
        recording = true;
      }
      const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
      while (sent < due) {
        sender.send(`t=${performance.now().toFixed(3)}`.padEnd(PAYLOAD_BYTES, " "));
        sent++;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    clearInterval(sampler);
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = process.cpuUsage();
    const generatorCpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / 1e6 / seconds;
    // natter counts the clients it dropped as too slow; the reference has no /metrics.
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    const dropped = Number(/^natter_slow_consumers_total (\d+)$/m.exec(metrics)?.[1] ?? 0);
    rssMax = Math.max(rssMax, rssMiB(child.pid));
    const bytes = receivers.reduce((sum, r) => sum + r.bytes, 0) - bytes0;
    for (const receiver of receivers) receiver.close();
    await Promise.all(receivers.map((r) => r.done));
    await sender.close();
    try {
      stuck?.close();
    } catch {
      // the server closed it
    }
    return {
      growthMiB: rssMax - rssBefore,
      p50: delays.percentile(0.5),
      p99: delays.percentile(0.99),
      receivedMiBPerSecond: bytes / 1024 / 1024 / seconds,
      sentPerSecond: sent / (WARMUP + SECONDS),
      dropped,
      generatorCpu,
    };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();
console.log(
  `slow consumer: 1 client never reads, ${RECEIVERS} others receive ~${MIB} MiB/s for ${SECONDS} s ` +
    `(after ${WARMUP} s of the same load without it)`,
);
const results: Record<string, unknown> = {};
const natter = SERVERS.find((server) => server.name === "natter")!;
const reference = SERVERS.find((server) => server.name === "reference")!;
// The reference last: it buffers gigabytes for the stuck client, and the machine takes a while
// to get that memory back (a natter run right after it once saw its p99 triple).
const runs: { label: string; server: Server; withStuck: boolean }[] = [
  { label: "natter", server: natter, withStuck: true },
  ...(values["no-control"]
    ? []
    : [{ label: "natter, no stuck client (control)", server: natter, withStuck: false }]),
  { label: "reference", server: reference, withStuck: true },
];
for (const { label, server, withStuck } of runs) {
  const r = await measure(server, withStuck);
  results[withStuck ? server.name : `${server.name}-control`] = r;
  console.log(
    `${label.padEnd(10)} memory +${r.growthMiB.toFixed(1)} MiB   p50 ${r.p50.toFixed(2)} ms` +
      `   p99 ${r.p99.toFixed(2)} ms   received ${r.receivedMiBPerSecond.toFixed(1)} MiB/s` +
      `   slow clients dropped: ${r.dropped}   load generator CPU ${
        (r.generatorCpu * 100).toFixed(0)
      }%`,
  );
}
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    { date: new Date().toISOString(), receivers: RECEIVERS, mib: MIB, results },
    null,
    2,
  ) +
    "\n",
);
console.log(`wrote ${values.out}`);
