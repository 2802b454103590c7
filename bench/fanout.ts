/**
 * Fan-out at saturation: one sender, N receivers in one room, 64-byte messages as fast as the
 * server takes them. Runs natter and the minimal reference server (bench/reference.ts), and Bun's
 * native publish where Bun is installed, back to back, interleaved, several times; reports
 * deliveries per second and the ratios, the delivery latency and the frames the first receiver
 * got.
 *
 *     deno task bench            (or: deno run -A bench/fanout.ts --receivers 100,1000 --reps 3)
 *     deno run -A bench/fanout.ts --receivers 100 --window 16,64,256,1024   (other depths)
 *     deno run -A bench/fanout.ts --deep         (the single deep point of older results)
 *
 * The sender keeps W messages in flight, paced by the first receiver, refilling at every
 * arrival. By default each receiver count is swept over W (16, 64, 256, 1024 at 1000 receivers;
 * 16, 64, 256, 2048 at 100), and a chart of throughput against p99 per receiver count is written
 * (bench/chart.ts, `--charts DIR`). `--window` lists the depths for every receiver count instead;
 * `--deep` runs the one point older results used: W = max(4, 200000 / receivers), refilled once
 * half of it has arrived.
 *
 * The server runs pinned to core 0 and this load generator to core 1 (taskset, when present),
 * and the generator prints its own CPU time so that one can see it was not the bottleneck.
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { CONNECTOR, openClients } from "./clients.ts";
import { DelayHistogram, LineCounter } from "./counter.ts";
import { type FanoutReport, writeFanoutCharts } from "./chart.ts";
import { startProfile } from "./profile.ts";
import { RawSender } from "./sender.ts";
import {
  ALL_SERVERS,
  BATCH_PROBES,
  BUN_SERVER,
  haveTaskset,
  medians,
  open,
  pinSelf,
  PROBE_SERVERS,
  processCpuSeconds,
  type Server,
  start,
} from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    receivers: { type: "string", default: "100,1000" },
    window: { type: "string" },
    reps: { type: "string", default: "3" },
    seconds: { type: "string", default: "3" },
    out: { type: "string", default: "bench/last-fanout.json" },
    // Only these servers (names, comma-separated: natter,bun,batch-node).
    only: { type: "string" },
    "no-bun": { type: "boolean", default: false },
    // Adds the reference's chat over natter's listener (bench/probe-node-http.ts) and over a bare
    // node:net socket (what a write costs on a WebSocket over a node socket, against Deno.serve's),
    // and natter's batching alone (bench/probe-batch.ts: the runtime's floor for a broadcast).
    probes: { type: "boolean", default: false },
    // The old single deep point per receiver count (half-window refill), as in older results.
    deep: { type: "boolean", default: false },
    // Where the throughput/p99 charts go (fanout-N.svg); not written with --deep.
    charts: { type: "string", default: "bench/" },
    // Profiles natter through the inspector on this port while it is measured (start it with
    // BENCH_SERVER_FLAGS=--inspect=127.0.0.1:PORT and --only natter); prints the top functions.
    profile: { type: "string" },
    // The sender's name: natter starts each line it delivers with `name: ` (the others deliver the
    // message as sent). Without one natter names it guest-PORT, 13 bytes more per line.
    "sender-name": { type: "string" },
  },
});
const RECEIVER_COUNTS = values.receivers.split(",").map(Number);
/** The windows `--window` asks for, at every receiver count. */
const WINDOWS: number[] | undefined = values.window?.split(",").map(Number);
if (WINDOWS?.some((w) => !(Number.isInteger(w) && w > 0))) {
  throw new Error(`--window takes positive integers, e.g. 16,64,256: got ${values.window}`);
}
const DEEP = values.deep;
if (DEEP && WINDOWS) throw new Error("--deep is one window per receiver count: drop --window");
const REPS = Number(values.reps);
const SECONDS = Number(values.seconds);
const PAYLOAD_BYTES = 64;
/** `--deep`'s window: deep queues, enough to keep the server busy (the default before sweeps). */
const deepWindow = (receivers: number) => Math.max(4, Math.round(200_000 / receivers));
/**
 * The default sweep over messages in flight: from a shallow queue (latency) to a deep one
 * (throughput). Up to 100 receivers it goes to 2048 (200k deliveries queued at 100), above that
 * to 1024 (1M at 1000).
 */
const sweep = (receivers: number) => receivers <= 100 ? [16, 64, 256, 2048] : [16, 64, 256, 1024];
/** The windows to run at a receiver count. */
const windowsFor = (receivers: number) =>
  WINDOWS ?? (DEEP ? [deepWindow(receivers)] : sweep(receivers));
/** At or above this share of its core, the generator may be the limit: the point is flagged. */
const GENERATOR_LIMIT = 0.9;
/** The issue's bound on max/min deliveries/s across repetitions: above it, the spread is flagged. */
const SPREAD_LIMIT = 1.15;
// Bun's native publish joins the runs where Bun is installed (the issue's yardstick: Bun packs
// ~35 frames into each write under load). `--no-bun` leaves it out.
const SERVERS = [
  ...ALL_SERVERS,
  ...(BUN_SERVER && !values["no-bun"] ? [BUN_SERVER] : []),
  ...(values.probes ? [...PROBE_SERVERS, ...BATCH_PROBES] : []),
]
  .filter((s) => !values.only || values.only.split(",").includes(s.name));

/**
 * A message carrying its send time: `t` and this process's performance.now() in milliseconds,
 * padded with `x` to 64 bytes. natter delivers it as `name: t123.456xxx…`, the others as sent.
 */
const stamped = () => `t${performance.now().toFixed(3)}`.padEnd(PAYLOAD_BYTES, "x");
/** The stamp in a line of a frame. */
const STAMP = /t(\d+\.\d+)x/g;

/**
 * Counts the stamped lines (the sender's messages) in a frame, and records now minus each stamp
 * into `delays` when given. About 0.1 µs a line: the generator's CPU barely moves.
 */
function stamps(data: string, now: number, delays: DelayHistogram | undefined): number {
  let count = 0;
  STAMP.lastIndex = 0;
  for (let match = STAMP.exec(data); match; match = STAMP.exec(data)) {
    count++;
    delays?.record(now - Number(match[1]));
  }
  return count;
}

/** One repetition against one server. */
interface Run {
  deliveriesPerSecond: number;
  generatorCpu: number;
  serverCpu: number;
  /** Server CPU seconds per million deliveries. */
  cpuPerMillion: number;
  /** Delivery latency at the first receiver (send to WebSocket message event), milliseconds. */
  p50: number;
  p99: number;
  /** Lines the first receiver timed. */
  latencySamples: number;
  /** WebSocket message events at the first receiver per second, and lines per event. */
  framesPerSecond: number;
  linesPerFrame: number;
}

async function measure(server: Server, receiverCount: number, window: number): Promise<Run> {
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
    /** Messages and frames the first receiver got since the warm-up. */
    let delivered = 0;
    let frames = 0;
    // The first receiver times every message it gets (while recording): a 10 µs histogram,
    // which allocates nothing per message.
    const delays = new DelayHistogram();
    let recording = false;
    // The first receiver paces the sender: at most `window` messages in flight. Every arrival
    // is refilled at once (always `window` in flight, as a curve over depth needs); with --deep,
    // once half of them have arrived, as the older results did. Saturation is the most the server
    // sustains; flooding it instead measures only how it queues. Only the sender's messages
    // count: natter's welcome and join notices (one per receiver) had widened its window by the
    // number of receivers.
    let firstSeen = 0;
    let sent = 0;
    let wake: (() => void) | undefined;
    receivers[0]!.onmessage = (e) => {
      const n = stamps(e.data, performance.now(), recording ? delays : undefined);
      if (n === 0) return;
      delivered += n;
      firstSeen += n;
      frames++;
      if (wake && sent - firstSeen < (DEEP ? window / 2 : window)) wake();
    };
    // A raw sender (bench/sender.ts): the frames of a window refill go out in one write.
    const senderName = values["sender-name"];
    const sender = await RawSender.open(
      port,
      senderName === undefined ? path : `${path}&name=${encodeURIComponent(senderName)}`,
    );
    await new Promise((r) => setTimeout(r, 300));
    let running = true;
    const pump = (async () => {
      while (running) {
        // One stamp per refill: its messages are queued together, and the sender encodes a
        // repeated payload once.
        const payload = stamped();
        while (sent - firstSeen < window) {
          sender.send(payload);
          sent++;
        }
        await new Promise<void>((r) => wake = r);
        wake = undefined;
      }
    })();
    await new Promise((r) => setTimeout(r, 500)); // warm up
    delivered = 0;
    frames = 0;
    recording = true;
    const counted0 = await counted();
    const cpu0 = process.cpuUsage();
    const server0 = processCpuSeconds(child.pid);
    const t0 = performance.now();
    const stopProfile = values.profile && server.name === "natter"
      ? await startProfile(Number(values.profile))
      : undefined;
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    if (stopProfile) console.log(`natter's CPU profile, self time:\n${await stopProfile()}`);
    const counted1 = await counted();
    recording = false;
    const seconds = (performance.now() - t0) / 1000;
    const serverCpu = (processCpuSeconds(child.pid) - server0) / seconds;
    const count = delivered + counted1.lines - counted0.lines;
    const firstFrames = frames;
    const firstLines = delivered;
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
    return {
      deliveriesPerSecond: count / seconds,
      generatorCpu,
      serverCpu,
      cpuPerMillion: serverCpu / (count / seconds / 1e6),
      p50: delays.percentile(0.5),
      p99: delays.percentile(0.99),
      latencySamples: delays.count,
      framesPerSecond: firstFrames / seconds,
      linesPerFrame: firstLines / firstFrames,
    };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();

// natter first in the table and the JSON; the runs go in SERVERS' order.
const names = SERVERS.map((server) => server.name)
  .sort((a, b) => Number(b === "natter") - Number(a === "natter"));
const hasBun = names.includes("bun");
const results: FanoutReport["results"] = [];
console.log(
  `fan-out, ${PAYLOAD_BYTES}-byte messages, ${SECONDS} s per run, ${REPS} reps, ` +
    `taskset: ${haveTaskset}; ${DEEP ? "deep (half-window refill)" : "every arrival refilled"}; ` +
    `medians over reps (generator CPU: the highest; GEN: ≥ ${percent(GENERATOR_LIMIT)} of a ` +
    `core); spread: max/min deliveries/s over reps (! above ${SPREAD_LIMIT}); CPU s/M: server ` +
    `CPU seconds per million deliveries; latency and frames at the first receiver; each cell ` +
    `lists ${names.join(" / ")}`,
);

/** Formats a number like 4,541,821. */
function thousands(value: number) {
  return Math.round(value).toLocaleString("en");
}
function percent(value: number) {
  return `${(value * 100).toFixed(0)}%`;
}
/** A point's figures for one server: the medians, the generator's highest CPU, the spread. */
interface Point extends Run {
  /** Max over min of deliveries/s across the repetitions. */
  spread: number;
}
/** A column of the table: its header, its cell from the points by server, the cell's width. */
interface Column {
  header: string;
  cell: (points: Record<string, Point>) => string;
  width: number;
}
/** A column with a value for each server, each padded to `width`. */
const each = (header: string, width: number, value: (point: Point) => string): Column => ({
  header,
  cell: (points) => names.map((name) => value(points[name]!).padStart(width)).join(" / "),
  width: Math.max(header.length, names.length * (width + 3) - 3),
});
/** natter's deliveries over another server's. */
const ratio = (other: string): Column => ({
  header: `natter/${other.slice(0, 3)}`,
  cell: (points) =>
    `${(points.natter!.deliveriesPerSecond / points[other]!.deliveriesPerSecond).toFixed(2)}x`,
  width: 10,
});
const columns: Column[] = [
  each("deliveries/s", 10, (point) => thousands(point.deliveriesPerSecond)),
  ...["reference", "bun"].filter((other) => names.includes(other) && names.includes("natter"))
    .map(ratio),
  each("spread", 5, (p) => `${p.spread.toFixed(2)}${p.spread > SPREAD_LIMIT ? "!" : ""}`),
  each("p50 ms", 6, (point) => point.p50.toFixed(2)),
  each("p99 ms", 6, (point) => point.p99.toFixed(2)),
  each("frames/s", 7, (point) => thousands(point.framesPerSecond)),
  each("lines/frame", 5, (point) => point.linesPerFrame.toFixed(1)),
  each("server CPU", 4, (point) => percent(point.serverCpu)),
  each("CPU s/M", 5, (point) => point.cpuPerMillion.toPrecision(3)),
  each(
    "generator CPU",
    8,
    (point) => percent(point.generatorCpu) + (point.generatorCpu >= GENERATOR_LIMIT ? " GEN" : ""),
  ),
];
const widths = ["receivers".length, "window".length, ...columns.map((column) => column.width)];
const printRow = (cells: string[]) =>
  console.log(`| ${cells.map((cell, i) => cell.padStart(widths[i]!)).join(" | ")} |`);
printRow(["receivers", "window", ...columns.map((column) => column.header)]);
console.log(`|${widths.map((w) => `${"-".repeat(w + 1)}:`).join("|")}|`);

for (const receivers of RECEIVER_COUNTS) {
  for (const window of windowsFor(receivers)) {
    const runs: Record<string, Run[]> = Object.fromEntries(names.map((name) => [name, []]));
    for (let rep = 0; rep < REPS; rep++) {
      for (const server of SERVERS) {
        runs[server.name]!.push(await measure(server, receivers, window));
      }
    }
    const summary = medians(runs, [
      "deliveriesPerSecond",
      "serverCpu",
      "cpuPerMillion",
      "p50",
      "p99",
      "latencySamples",
      "framesPerSecond",
      "linesPerFrame",
    ]);
    // The generator's CPU is the highest of the reps: how close it came to being the limit.
    const shown: Record<string, Point> = Object.fromEntries(names.map((name) => {
      const rates = runs[name]!.map((run) => run.deliveriesPerSecond);
      return [name, {
        ...summary[name]!,
        generatorCpu: Math.max(...runs[name]!.map((run) => run.generatorCpu)),
        spread: Math.max(...rates) / Math.min(...rates),
      }];
    }));
    const deliveries = (name: string) => shown[name]?.deliveriesPerSecond ?? NaN;
    const natter = deliveries("natter");
    const perServer = (key: keyof Point) =>
      Object.fromEntries(names.map((name) => [name, shown[name]![key]]));
    results.push({
      scenario: `fan-out, ${receivers} receivers` + (DEEP ? "" : `, window ${window}`),
      receivers,
      window,
      reference: deliveries("reference"),
      natter,
      ratio: natter / deliveries("reference"),
      ...(hasBun ? { bun: deliveries("bun"), natterToBun: natter / deliveries("bun") } : {}),
      deliveriesPerSecond: perServer("deliveriesPerSecond"),
      spread: perServer("spread"),
      cpuSecondsPerMillionDeliveries: perServer("cpuPerMillion"),
      generatorCpu: perServer("generatorCpu"),
      generatorLimited: names.filter((name) => shown[name]!.generatorCpu >= GENERATOR_LIMIT),
      serverCpu: perServer("serverCpu"),
      latencyMs: Object.fromEntries(
        names.map((name) => [name, { p50: shown[name]!.p50, p99: shown[name]!.p99 }]),
      ),
      latencySamples: perServer("latencySamples"),
      firstReceiverFramesPerSecond: perServer("framesPerSecond"),
      linesPerFrame: perServer("linesPerFrame"),
      runs: Object.fromEntries(
        names.map((name) => [name, runs[name]!.map((run) => run.deliveriesPerSecond)]),
      ),
      repetitions: runs,
    });
    printRow([String(receivers), String(window), ...columns.map((column) => column.cell(shown))]);
  }
}
const report: FanoutReport & Record<string, unknown> = {
  date: new Date().toISOString(),
  payloadBytes: PAYLOAD_BYTES,
  seconds: SECONDS,
  reps: REPS,
  servers: names,
  windows: DEEP
    ? "deep: max(4, 200000 / receivers), refilled at half"
    : "refilled at every arrival",
  generatorLimit: GENERATOR_LIMIT,
  latencySampling: "every line at the first receiver, after the warm-up",
  results,
};
await Deno.writeTextFile(values.out, JSON.stringify(report, null, 2) + "\n");
console.log(`wrote ${values.out}`);
// One point per receiver count is no curve: --deep leaves the committed charts alone.
if (!DEEP) {
  for (const path of await writeFanoutCharts(report, values.charts)) console.log(`wrote ${path}`);
}
