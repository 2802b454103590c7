/**
 * Connections: how fast a server takes N clients into one room (natter with its join notices on,
 * the reference with none), and how much memory each idle connection costs it (server RSS from
 * /proc, before and after). Interleaved with the reference, several times; medians and ratios.
 *
 *     deno run -A bench/connections.ts [--clients 5000] [--more N] [--reps 5] [--probes]
 *
 * `--probes` adds two servers that chat like the reference over the listener natter's door
 * uses (bench/probe-node-http.ts, bench/probe-node-net.ts): the floor under natter's connect rate.
 *
 * The server holds both crowds at once: 2 × 10,000 sockets need more than 20,000 open files
 * (`ulimit -n`); `--clients 10000 --more 5000` fits under that limit.
 */

import { parseArgs } from "node:util";
import process from "node:process";
import { LineCounter } from "./counter.ts";
import { CONNECTOR, openClients } from "./clients.ts";
import {
  ALL_SERVERS,
  interleaved,
  medians,
  pinSelf,
  PROBE_SERVERS,
  processCpuSeconds,
  type Server,
  start,
} from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    clients: { type: "string", default: "5000" },
    /** Clients opened after the first crowd (default: as many again); the server holds both. */
    more: { type: "string" },
    reps: { type: "string", default: "5" },
    probes: { type: "boolean", default: false },
    // Only these servers (names, comma-separated: natter,node-http).
    only: { type: "string" },
    out: { type: "string", default: "bench/last-connections.json" },
  },
});
const CLIENTS = Number(values.clients);
const MORE = Number(values.more ?? values.clients);
const REPS = Number(values.reps);
const BATCH = 100;

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1]);
}

/** Opens `count` clients in batches; resolves with the time it took, its CPU, and a way to close them. */
async function connectAll(port: number, path: string, count: number) {
  if (CONNECTOR) return await openClients(port, path, count, BATCH);
  const clients: LineCounter[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < count; i += BATCH) {
    clients.push(
      ...await Promise.all(
        Array.from({ length: Math.min(BATCH, count - i) }, () => LineCounter.open(port, path)),
      ),
    );
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = process.cpuUsage();
  return {
    seconds,
    generatorCpu: ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / 1e6 / seconds,
    async close() {
      for (const client of clients) client.close();
      await Promise.all(clients.map((c) => c.done));
    },
  };
}

async function measure(server: Server) {
  const { port, child } = await start(server);
  const path = "/?room=crowd";
  let warm: LineCounter | undefined;
  let crowd: Awaited<ReturnType<typeof connectAll>> | undefined;
  let second: Awaited<ReturnType<typeof connectAll>> | undefined;
  try {
    // Warm up with one connection, then take the baseline.
    warm = await LineCounter.open(port, path);
    await new Promise((r) => setTimeout(r, 300));
    const before = rssKiB(child.pid);
    const serverCpu0 = processCpuSeconds(child.pid);
    crowd = await connectAll(port, path, CLIENTS - 1);
    const { seconds, generatorCpu } = crowd;
    const serverCpu = (processCpuSeconds(child.pid) - serverCpu0) / seconds;
    // Let join notices drain, then measure the idle cost.
    await new Promise((r) => setTimeout(r, 1500));
    const after = rssKiB(child.pid);
    // As many again: what one more connection costs, without what the first crowd left behind
    // once (heap grown during the storm, allocator arenas).
    second = await connectAll(port, path, MORE);
    await new Promise((r) => setTimeout(r, 1500));
    const again = rssKiB(child.pid);
    return {
      connectsPerSecond: (CLIENTS - 1) / seconds,
      bytesPerConnection: ((after - before) * 1024) / (CLIENTS - 1),
      marginalBytesPerConnection: ((again - after) * 1024) / MORE,
      generatorCpu,
      serverCpu,
    };
  } finally {
    warm?.close();
    await crowd?.close();
    await second?.close();
    child.kill("SIGKILL");
    await child.status;
  }
}

await pinSelf();
console.log(`connections: ${CLIENTS} clients into one room, batches of ${BATCH}, ${REPS} reps`);
const servers = (values.probes ? [...ALL_SERVERS, ...PROBE_SERVERS] : ALL_SERVERS)
  .filter((s) => !values.only || values.only.split(",").includes(s.name));
const runs = await interleaved(REPS, measure, servers);
const summary = medians(runs, [
  "connectsPerSecond",
  "bytesPerConnection",
  "marginalBytesPerConnection",
  "generatorCpu",
  "serverCpu",
]);
const ref = summary.reference;
const nat = summary.natter;
for (const [name, s] of Object.entries(summary)) {
  console.log(
    `${name.padEnd(10)} ${
      Math.round(s.connectsPerSecond).toLocaleString("en").padStart(7)
    } connects/s   ` +
      `${(s.bytesPerConnection / 1024).toFixed(1)} KiB per idle connection ` +
      `(${(s.marginalBytesPerConnection / 1024).toFixed(1)} KiB for each of ${MORE} more)   ` +
      `load generator CPU ${(s.generatorCpu * 100).toFixed(0)}%   server CPU ${
        (s.serverCpu * 100).toFixed(0)
      }%`,
  );
}
const comparison = ref && nat
  ? {
    connectRatio: nat.connectsPerSecond / ref.connectsPerSecond,
    extraBytesPerConnection: nat.bytesPerConnection - ref.bytesPerConnection,
    extraMarginalBytesPerConnection: nat.marginalBytesPerConnection -
      ref.marginalBytesPerConnection,
  }
  : undefined;
if (comparison) {
  console.log(
    `natter/reference connect rate ${comparison.connectRatio.toFixed(2)}x; natter uses ${
      (comparison.extraBytesPerConnection / 1024).toFixed(1)
    } KiB more per idle connection on average, ${
      (comparison.extraMarginalBytesPerConnection / 1024).toFixed(1)
    } KiB more for each further one`,
  );
}
for (const probe of PROBE_SERVERS) {
  const floor = summary[probe.name];
  if (!floor) continue;
  const line = [`${probe.name}`];
  if (ref) {
    line.push(
      `/reference connect rate ${(floor.connectsPerSecond / ref.connectsPerSecond).toFixed(2)}x;`,
    );
  }
  if (nat) {
    line.push(
      ` natter/${probe.name} ${(nat.connectsPerSecond / floor.connectsPerSecond).toFixed(2)}x`,
    );
  }
  console.log(line.join(""));
}
await Deno.writeTextFile(
  values.out,
  JSON.stringify(
    { date: new Date().toISOString(), clients: CLIENTS, summary, comparison, runs },
    null,
    2,
  ) + "\n",
);
console.log(`wrote ${values.out}`);
