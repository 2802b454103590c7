/**
 * Connections: how fast a server takes N clients into one room (natter with its join notices on,
 * the reference with none), and how much memory each idle connection costs it (server RSS from
 * /proc, before and after). Interleaved with the reference, several times; medians and ratios.
 *
 *     deno run -A bench/connections.ts [--clients 5000] [--reps 3]
 */

import { parseArgs } from "node:util";
import { interleaved, medians, open, pinSelf, type Server, start } from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "5000" },
    reps: { type: "string", default: "3" },
    out: { type: "string", default: "bench/last-connections.json" },
  },
});
const CLIENTS = Number(values.clients);
const REPS = Number(values.reps);
const BATCH = 100;

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1]);
}

async function measure(server: Server) {
  const { port, child } = await start(server);
  const url = `ws://127.0.0.1:${port}/?room=crowd`;
  const clients: WebSocket[] = [];
  try {
    // Warm up with one connection, then take the baseline.
    clients.push(await open(url));
    await new Promise((r) => setTimeout(r, 300));
    const before = rssKiB(child.pid);
    const t0 = performance.now();
    for (let i = 1; i < CLIENTS; i += BATCH) {
      clients.push(
        ...await Promise.all(Array.from({ length: Math.min(BATCH, CLIENTS - i) }, () => open(url))),
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    // Let join notices drain, then measure the idle cost.
    await new Promise((r) => setTimeout(r, 1500));
    const after = rssKiB(child.pid);
    return {
      connectsPerSecond: (CLIENTS - 1) / seconds,
      bytesPerConnection: ((after - before) * 1024) / (CLIENTS - 1),
    };
  } finally {
    for (const ws of clients) ws.close();
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();
console.log(`connections: ${CLIENTS} clients into one room, batches of ${BATCH}, ${REPS} reps`);
const runs = await interleaved(REPS, measure);
const summary = medians(runs, ["connectsPerSecond", "bytesPerConnection"]);
const ref = summary.reference!;
const nat = summary.natter!;
for (const [name, s] of Object.entries(summary)) {
  console.log(
    `${name.padEnd(10)} ${
      Math.round(s.connectsPerSecond).toLocaleString("en").padStart(7)
    } connects/s   ` +
      `${(s.bytesPerConnection / 1024).toFixed(1)} KiB per idle connection`,
  );
}
const comparison = {
  connectRatio: nat.connectsPerSecond / ref.connectsPerSecond,
  extraBytesPerConnection: nat.bytesPerConnection - ref.bytesPerConnection,
};
console.log(
  `natter/reference connect rate ${comparison.connectRatio.toFixed(2)}x; ` +
    `natter uses ${
      (comparison.extraBytesPerConnection / 1024).toFixed(1)
    } KiB more per idle connection`,
);
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    { date: new Date().toISOString(), clients: CLIENTS, summary, comparison, runs },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${values.out}`);
