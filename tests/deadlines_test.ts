import assert from "node:assert/strict";
import { Deadlines } from "../lib/base/deadlines.ts";
import { sleep } from "./helpers.ts";

Deno.test("Deadlines: each item expires once, between ms and ms + tick after it was (re)armed; disarmed ones never", async () => {
  const expired: { item: string; at: number }[] = [];
  const started = performance.now();
  const deadlines = new Deadlines<string>(120, (item) => {
    expired.push({ item, at: performance.now() - started });
  }, 20);
  deadlines.arm("a");
  deadlines.arm("b");
  deadlines.arm("c");
  await sleep(60);
  deadlines.arm("a"); // re-armed: falls due 60 ms later than b
  deadlines.disarm("c");
  await sleep(500);
  assert.equal(expired.map((e) => e.item).join(), "b,a", JSON.stringify(expired));
  const [b, a] = expired;
  assert.ok(b!.at >= 120 && b!.at < 120 + 250, `b at ${b!.at}`);
  assert.ok(a!.at >= 180 && a!.at < 180 + 250, `a at ${a!.at}`);
  assert.equal(deadlines.size, 0);
});

Deno.test("Deadlines: the interval runs only while something is armed (no timer is left behind)", async () => {
  let fired = 0;
  const deadlines = new Deadlines<object>(10_000, () => fired++, 10);
  const item = {};
  deadlines.arm(item);
  deadlines.disarm(item); // the last one: the interval stops now (the test's leak check sees it)
  deadlines.arm({});
  deadlines.clear();
  await sleep(30);
  assert.equal(fired, 0);
});

Deno.test("Deadlines: an expiry that throws does not stop the others", async () => {
  const seen: number[] = [];
  const deadlines = new Deadlines<number>(10, (n) => {
    seen.push(n);
    if (n === 1) throw new Error("boom");
  }, 10);
  deadlines.arm(1);
  deadlines.arm(2);
  await sleep(80);
  assert.equal(seen.join(), "1,2");
});
