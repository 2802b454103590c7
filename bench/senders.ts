/**
 * Many senders: 200 clients in one room, every one of them sending 64-byte messages and
 * receiving everyone's. Overload, but bounded: each sender keeps at most a few of its own
 * messages in flight, counted as seen by one observer client, so the server is saturated
 * without the run turning into a measure of how much it can queue. Reports deliveries per
 * second (every line every client receives) for natter and the reference server.
 *
 *     deno run -A bench/senders.ts [--senders 200] [--reps 3] [--seconds 4]
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { interleaved, lines, medians, open, pinSelf, type Server, start } from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    senders: { type: "string", default: "200" },
    reps: { type: "string", default: "3" },
    seconds: { type: "string", default: "4" },
    window: { type: "string", default: "4" },
    out: { type: "string", default: "bench/last-senders.json" },
  },
});
const SENDERS = Number(values.senders);
const REPS = Number(values.reps);
const SECONDS = Number(values.seconds);
/** Messages each sender may have in flight (sent, not yet seen by the observer). */
const WINDOW = Number(values.window);

async function measure(server: Server) {
  const { port, child } = await start(server);
  const url = `ws://127.0.0.1:${port}/?room=senders`;
  try {
    const clients: WebSocket[] = [];
    for (let i = 0; i < SENDERS; i += 50) {
      clients.push(
        ...await Promise.all(Array.from({ length: Math.min(50, SENDERS - i) }, () => open(url))),
      );
    }
    const sent = new Array<number>(SENDERS).fill(0);
    const seen = new Array<number>(SENDERS).fill(0);
    let delivered = 0;
    let running = false;
    const payload = (i: number) => `${i}:`.padEnd(64, "x");
    const pump = (i: number) => {
      while (running && sent[i]! - seen[i]! < WINDOW) {
        clients[i]!.send(payload(i));
        sent[i]!++;
      }
    };
    // Client 0 observes: it credits each sender for its lines ("guest-N: 17:xx" or "17:xx").
    clients[0]!.onmessage = (event) => {
      const data = String(event.data);
      delivered += lines(data);
      for (const line of data.split("\n")) {
        const colon = line.lastIndexOf(":x");
        if (colon === -1) continue;
        let start = colon;
        while (start > 0 && line.charCodeAt(start - 1) >= 48 && line.charCodeAt(start - 1) <= 57) {
          start--;
        }
        const i = Number(line.slice(start, colon));
        seen[i]!++;
        pump(i);
      }
    };
    for (const ws of clients.slice(1)) ws.onmessage = (e) => delivered += lines(String(e.data));
    await new Promise((r) => setTimeout(r, 300));
    running = true;
    for (let i = 0; i < SENDERS; i++) pump(i);
    await new Promise((r) => setTimeout(r, 500)); // warm up
    delivered = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const seconds = (performance.now() - t0) / 1000;
    const count = delivered;
    const cpu1 = process.cpuUsage();
    running = false;
    for (const ws of clients) ws.close();
    const generatorCpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / 1e6 / seconds;
    return { deliveriesPerSecond: count / seconds, generatorCpu };
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();
console.log(
  `many senders: ${SENDERS} clients in one room all sending (window ${WINDOW} each), ${SECONDS} s per run, ${REPS} reps`,
);
const runs = await interleaved(REPS, measure);
const summary = medians(runs, ["deliveriesPerSecond", "generatorCpu"]);
const ratio = summary.natter!.deliveriesPerSecond / summary.reference!.deliveriesPerSecond;
for (const [name, s] of Object.entries(summary)) {
  console.log(
    `${name.padEnd(10)} ${
      Math.round(s.deliveriesPerSecond).toLocaleString("en").padStart(11)
    } deliveries/s` +
      `   load generator CPU ${(s.generatorCpu * 100).toFixed(0)}%`,
  );
}
console.log(`ratio natter/reference: ${ratio.toFixed(1)}x`);
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    { date: new Date().toISOString(), senders: SENDERS, summary, ratio, runs },
    null,
    2,
  ) +
    "\n",
);
console.log(`wrote ${values.out}`);
