/**
 * Cheap requests that cost the server dear: history replies. Twenty connections, each within the
 * default rate limit (5 a second), ask for the largest history page (200 messages of ~2.6 KiB,
 * ~512 KiB a reply) as often as they may, from another process; a bystander in another room
 * measures the round trip of its own messages meanwhile.
 */

import assert from "node:assert/strict";
import { Client, ServerProcess, sleep } from "./helpers.ts";

const FLOOD = `
const [port, n, seconds] = Deno.args.map(Number);
let replies = 0, bytes = 0, refused = 0;
const sockets = [];
for (let i = 0; i < n; i++) {
  const ws = new WebSocket("ws://127.0.0.1:" + port + "/?room=big&name=asker" + i, "natter.v1");
  ws.onmessage = (e) => {
    bytes += e.data.length;
    if (e.data.includes('"type":"history"')) replies++;
    if (e.data.includes('"code":"rate_limited"')) refused++;
  };
  sockets.push(ws);
}
await new Promise((r) => setTimeout(r, 1000));
const end = Date.now() + seconds * 1000;
while (Date.now() < end) {
  for (const ws of sockets) if (ws.readyState === 1) ws.send('{"type":"history","limit":200}');
  await new Promise((r) => setTimeout(r, 200));
}
console.log(JSON.stringify({ replies, bytes, refused }));
for (const ws of sockets) ws.close();
Deno.exit(0);
`;

/** CPU seconds a process has used (Linux /proc). */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

Deno.test("history replies: 20 connections asking for the largest page within the rate limit do not slow a bystander", async () => {
  const server = await ServerProcess.start(["--port", "0", "--hostname", "127.0.0.1"]);
  const port = await server.port();
  const url = `ws://127.0.0.1:${port}/`;
  try {
    // 200 messages of ~2.6 KiB in #big, from 10 clients (20 each: the default burst).
    const line = '"'.repeat(2600); // quotes: escaped in JSON, ~5 KiB a message
    const seeders = await Promise.all(
      Array.from({ length: 10 }, (_, i) => Client.json(`${url}?room=big&name=seed${i}`)),
    );
    for (const seeder of seeders) {
      for (let i = 0; i < 20; i++) seeder.send({ type: "say", text: `${i} ${line}`, ref: i });
    }
    for (const seeder of seeders) await seeder.event("message", (e) => e.ref === 19, 10_000);
    await Promise.all(seeders.map((seeder) => seeder.close()));

    const bystander = await Client.json(`${url}?room=quiet&name=bystander`);
    const cpuBefore = cpuSeconds(server.child.pid);
    const flood = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", FLOOD, String(port), "20", "8"],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    await sleep(2000); // the flood is under way
    const rtts: number[] = [];
    for (let i = 0; i < 24; i++) {
      const start = performance.now();
      bystander.send({ type: "say", text: `ping ${i}`, ref: `p${i}` });
      await bystander.event("message", (e) => e.ref === `p${i}`, 20_000);
      rtts.push(performance.now() - start);
      await sleep(250); // within the bystander's own rate limit (5 a second)
    }
    const output = await flood.output();
    const cpu = (cpuSeconds(server.child.pid) - cpuBefore) / 9; // a core's share over the flood
    const report = JSON.parse(new TextDecoder().decode(output.stdout));
    await bystander.close();
    const p50 = median(rtts);
    const worst = Math.max(...rtts);
    console.log(
      `bystander p50 ${p50.toFixed(1)} ms, worst ${
        worst.toFixed(0)
      } ms; flood: ${report.replies} ` +
        `history replies, ${(report.bytes / 2 ** 20).toFixed(0)} MiB, ${report.refused} refused; ` +
        `server CPU ${(cpu * 100).toFixed(0)}% of a core`,
    );
    assert(report.replies > 0, "the flood got history at all");
    // Each asker gets at most 1 MiB at once and 256 KiB a second (9 s connected): ~66 MiB in all.
    const allowed = 20 * (1 + 9 / 4) * 2 ** 20;
    assert(
      report.bytes <= allowed * 1.1,
      `the flood got ${(report.bytes / 2 ** 20).toFixed(0)} MiB of history (allowed about ${
        (allowed / 2 ** 20).toFixed(0)
      })`,
    );
    assert(p50 < 50, `a bystander's p50 round trip was ${p50.toFixed(1)} ms (allowed: 50)`);
  } finally {
    await server.stop();
    if (Deno.env.get("DEBUG")) console.log(server.stdout, server.stderr);
  }
});
