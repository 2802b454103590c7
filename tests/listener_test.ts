/**
 * The door's accept-loop watch (lib/door/listener.ts) in-process: a busy event loop is not an
 * accept loop that stopped (found by an outside review: a burst of fan-out held the loop for
 * seconds, the watch took it for running out of descriptors and cut the TCP budget to 219).
 */
import assert from "node:assert/strict";
import { createApp } from "../lib/app.ts";
import { openDoor } from "../lib/door/door.ts";
import { SILENT } from "../lib/base/log.ts";
import { sleep } from "./helpers.ts";

Deno.test("door: an event loop held busy for seconds is not taken for a stopped accept loop", async () => {
  const app = createApp({ quiet: true });
  const door = await openDoor(app, {
    port: 0,
    hostname: "127.0.0.1",
    headerTimeoutMs: 10_000,
    maxPending: 256,
    maxPendingPerAddress: 64,
    log: SILENT,
    watchMs: 20,
  });
  try {
    const budget = door.status().budget;
    for (let round = 0; round < 5; round++) {
      await sleep(30 + round * 17); // a probe may be in flight
      const until = Date.now() + 1800; // longer than the probe's wait (1.5 s)
      while (Date.now() < until) {
        // busy, as a burst of fan-out would keep it
      }
    }
    await sleep(1700);
    assert.equal(app.metrics.acceptStalls, 0, "no stall was seen");
    assert.equal(door.status().budget, budget, "the TCP budget is as it was");
  } finally {
    await door.close();
    await app.shutdown(0);
  }
});
