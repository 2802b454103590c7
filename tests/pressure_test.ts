/**
 * The memory budget's rules (lib/transport/pressure.ts), with a resident size the test sets:
 * over it, new connections are refused and the largest holders of unsent data dropped; memory
 * the allocator keeps after everyone left locks nobody out.
 */
import assert from "node:assert/strict";
import { FRESH_MS, MemoryGuard, type Shedable } from "../lib/transport/pressure.ts";
import { SILENT } from "../lib/base/log.ts";

const MiB = 1048576;

class Holder implements Shedable {
  open = true;
  constructor(public unsent: number) {}
  shed(): void {
    this.open = false;
  }
}

function guard(conns: Set<Holder>) {
  const state = { rss: 100 * MiB };
  const g = new MemoryGuard({
    budget: 1000 * MiB,
    connections: () => conns,
    idle: () => conns.size === 0,
    floor: 64 * 1024,
    log: SILENT,
    rss: () => state.rss,
  });
  return { g, state };
}

Deno.test("memory budget: over it, the largest holders of unsent data are dropped until the excess is covered", () => {
  const small = new Holder(10 * MiB);
  const big = new Holder(300 * MiB);
  const tiny = new Holder(1024);
  const { g, state } = guard(new Set([small, big, tiny]));
  state.rss = 1200 * MiB;
  g.check();
  assert.equal(g.over, true);
  assert.deepEqual([small.open, big.open, tiny.open], [true, false, true]);
  state.rss = 950 * MiB; // under the budget, not yet under 90 % of it: still refusing
  g.check();
  assert.equal(g.over, true);
  state.rss = 850 * MiB;
  g.check();
  assert.equal(g.over, false);
});

Deno.test("memory budget: memory kept by the allocator after everyone left does not lock new connections out, and growth past it is refused again", () => {
  const conns = new Set([new Holder(0)]);
  const { g, state } = guard(conns);
  state.rss = 1100 * MiB;
  g.check();
  assert.equal(g.over, true, "over while someone could hold it");
  g.check();
  assert.equal(g.over, true);
  conns.clear(); // everyone left; the resident size stays where it was
  g.check();
  assert.equal(g.over, false, "nobody holds it: new connections are taken again");
  assert.equal(g.ceiling, 1200 * MiB);
  conns.add(new Holder(0));
  state.rss = 1150 * MiB; // the new connections reuse what was kept
  g.check();
  assert.equal(g.over, false);
  state.rss = 1250 * MiB; // and grow past it
  g.check();
  assert.equal(g.over, true, "growth past what was kept is refused");
  state.rss = 950 * MiB; // under the raised mark's 90 % (and under the budget): taken again
  g.check();
  assert.equal(g.over, false, "under 90 % of the raised mark");
  assert.equal(g.ceiling, 1000 * MiB, "under the budget: the budget is the mark again");
  conns.clear();
  state.rss = 900 * MiB; // given back: the budget is the budget again
  g.check();
  assert.equal(g.over, false);
  assert.equal(g.ceiling, 1000 * MiB);
  state.rss = 1050 * MiB;
  conns.add(new Holder(0));
  g.check();
  assert.equal(g.over, true);
});

Deno.test("memory budget: a new connection is judged on a fresh reading, not on the last tick's", async () => {
  const { g, state } = guard(new Set([new Holder(0)]));
  g.check(); // a tick: under the budget
  state.rss = 1200 * MiB; // a burst passes it before the next tick
  assert.equal(g.over, false, "no tick since");
  await new Promise((resolve) => setTimeout(resolve, FRESH_MS + 10));
  assert.equal(g.refusing(), true, "the connection asking now is refused");
  state.rss = 1300 * MiB;
  assert.equal(g.refusing(), true);
  assert.equal(g.rss, 1200 * MiB, "readings closer together than FRESH_MS reuse the last one");
});
