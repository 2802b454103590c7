/**
 * Rooms are forgotten: a client that walks through 30,000 new rooms (join, say one line, move
 * on) leaves natter knowing only the rooms its history budget holds, not every room ever used.
 * (Before: every room stayed, and each new one cost more than the last; bench/rooms.ts measures
 * the cost per room and per message up to 250,000 rooms.)
 */

import assert from "node:assert/strict";
import { Client, ServerProcess } from "./helpers.ts";

const ROOMS = 30_000;

async function gauge(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`natter_${name} `));
  assert.ok(line, `/metrics has natter_${name}`);
  return Number(line.split(" ")[1]);
}

Deno.test("rooms: 30,000 rooms used one after another leave only what the history budget holds", async () => {
  // A fast client stands for many slow ones: the rate limit is per connection.
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--rate",
    "1000000",
    "--rate-burst",
    "1000000",
  ]);
  const port = await server.port();
  try {
    const walker = await Client.json(`ws://127.0.0.1:${port}/?room=r0&name=walker`);
    // In batches, each waited for: all 60,000 replies at once outran a test process starved of
    // CPU (CI runs tests beside other work), and natter rightly dropped it as too slow (4001).
    for (let i = 0; i < ROOMS; i++) {
      walker.send({ type: "join", room: `r${i}` });
      walker.send({ type: "say", text: `hello from room ${i}`, ref: i });
      if (i % 2000 === 1999 || i === ROOMS - 1) {
        await walker.event("message", (e) => e.ref === i, 60_000);
      }
    }
    const rooms = await gauge(port, "history_rooms");
    const bytes = await gauge(port, "history_bytes");
    console.log(
      `after ${ROOMS} rooms: ${rooms} known, ${(bytes / 2 ** 20).toFixed(1)} MiB counted`,
    );
    assert.ok(bytes <= 64 * 2 ** 20, `within the 64 MiB budget: ${bytes}`);
    // A one-line room counts ~3 KiB: about 21,000 fit; the rest were forgotten.
    assert.ok(rooms < 25_000, `rooms known: ${rooms} of ${ROOMS} used`);
    // The room the walker is in keeps its place: its ids go on one by one.
    walker.send({ type: "say", text: "one", ref: "a" });
    walker.send({ type: "say", text: "two", ref: "b" });
    const a = await walker.event("message", (e) => e.ref === "a", 30_000);
    const b = await walker.event("message", (e) => e.ref === "b", 30_000);
    assert.equal(b.id, (a.id as number) + 1);
    await walker.close();
  } finally {
    await server.stop();
  }
});
