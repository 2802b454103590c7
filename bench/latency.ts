/**
 * Latency at a fixed moderate rate: one sender, N receivers in one room, one 64-byte message
 * every few milliseconds (far below saturation). Each message carries its send time; every
 * receiver (in this same process, same clock) records the delay. Reports p50 and p99 for
 * natter and the reference server, interleaved, and their ratio (lower is better).
 *
 * Each run first sends at the same rate for `--warmup` seconds, unrecorded: the steady state
 * is what is compared. V8 compiles a function to optimized code only once it has run enough,
 * and at 500 messages a second natter's longer path (parse, store, encode, deliver) took
 * seconds to get there: with one receiver, its p50 was 50-70 µs above the reference's in the
 * first seconds and equal to it after a 4 s warm-up.
 *
 *     deno run -A bench/latency.ts [--receivers 100] [--interval-ms 2] [--reps 5] [--seconds 3]
 *       [--warmup 2]
 */

import { parseArgs } from "node:util";
import { DelayHistogram, LineCounter } from "./counter.ts";
import { interleaved, medians, pinSelf, processCpuSeconds, type Server, start } from "./harness.ts";
import { RawSender } from "./sender.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    receivers: { type: "string", default: "100" },
    "interval-ms": { type: "string", default: "2" },
    reps: { type: "string", default: "5" },
    seconds: { type: "string", default: "3" },
    warmup: { type: "string", default: "2" },
    out: { type: "string", default: "bench/last-latency.json" },
  },
});
const RECEIVERS = Number(values.receivers);
const INTERVAL_MS = Number(values["interval-ms"]);
const REPS = Number(values.reps);
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);

/** Sends one stamped message every INTERVAL_MS for `seconds`; resolves with how many a second. */
async function sendFor(sender: RawSender, seconds: number): Promise<number> {
  // On a schedule (message k is due at t0 + k × interval): a sleep of INTERVAL_MS after each
  // send lasts longer than asked (timers tick in whole milliseconds), which made 2 ms about
  // 3.3 ms here, 300 messages a second instead of 500.
  const t0 = performance.now();
  let sent = 0;
  while (sent < seconds * 1000 / INTERVAL_MS) {
    sender.send(`t=${performance.now().toFixed(3)}`.padEnd(64, " "));
    sent++;
    const wait = t0 + sent * INTERVAL_MS - performance.now();
    await new Promise((r) => setTimeout(r, Math.max(0, Math.floor(wait))));
  }
  return sent / ((performance.now() - t0) / 1000);
}

async function measure(server: Server) {
  const { port, child } = await start(server);
  const path = "/?room=latency";
  try {
    // Raw sockets that read at once and time the `t=` stamps (natter: "guest-123: t=12.345",
    // the reference: "t=12.345") into a histogram, without a string per frame
    // (bench/counter.ts): WebSocket objects put the generator's own work into the p99.
    const delays = new DelayHistogram();
    let recording = false;
    const timing = { record: (delay: number) => recording && delays.record(delay) };
    const receivers: LineCounter[] = [];
    for (let i = 0; i < RECEIVERS; i += 100) {
      receivers.push(
        ...await Promise.all(
          Array.from(
            { length: Math.min(100, RECEIVERS - i) },
            () => LineCounter.open(port, path, timing),
          ),
        ),
      );
    }
    // Nagle off, as in browsers (bench/sender.ts): Deno's WebSocket client leaves it on.
    const sender = await RawSender.open(port, path);
    await new Promise((r) => setTimeout(r, 300));
    await sendFor(sender, WARMUP);
    recording = true;
    const cpu0 = processCpuSeconds(child.pid);
    const t0 = performance.now();
    const perSecond = await sendFor(sender, SECONDS);
    await new Promise((r) => setTimeout(r, 200));
    recording = false;
    const serverCpu = (processCpuSeconds(child.pid) - cpu0) / ((performance.now() - t0) / 1000);
    for (const receiver of receivers) receiver.close();
    await Promise.all(receivers.map((r) => r.done));
    await sender.close();
    return {
      p50: delays.percentile(0.5),
      p99: delays.percentile(0.99),
      samples: delays.count,
      perSecond,
      serverCpu,
    };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();
console.log(
  `latency, ${RECEIVERS} receivers, one message every ${INTERVAL_MS} ms, ${SECONDS} s per run, ${REPS} reps`,
);
const runs = await interleaved(REPS, measure);
const summary = medians(runs, ["p50", "p99", "perSecond", "serverCpu"]);
const ratio = {
  p50: summary.natter!.p50 / summary.reference!.p50,
  p99: summary.natter!.p99 / summary.reference!.p99,
};
for (const [name, { p50, p99, perSecond, serverCpu }] of Object.entries(summary)) {
  console.log(
    `${name.padEnd(10)} p50 ${p50.toFixed(3)} ms   p99 ${p99.toFixed(3)} ms   ${
      Math.round(perSecond)
    } messages/s   server CPU ${(serverCpu * 100).toFixed(0)}%`,
  );
}
console.log(
  `ratio natter/reference: p50 ${ratio.p50.toFixed(2)}x   p99 ${
    ratio.p99.toFixed(2)
  }x (lower is better)`,
);
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      receivers: RECEIVERS,
      intervalMs: INTERVAL_MS,
      summary,
      ratio,
      runs,
    },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${values.out}`);
