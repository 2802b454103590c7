import assert from "node:assert/strict";
import { TokenBucket } from "../lib/base/limits.ts";

Deno.test("TokenBucket allows a burst, then the sustained rate", () => {
  let now = 0;
  const bucket = new TokenBucket(3, 2, () => now);
  assert.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
    true,
    true,
    true,
    false,
  ]);
  now += 500; // half a second at 2/s: one token
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  now += 10_000; // refills, but never past the burst
  assert.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
    true,
    true,
    true,
    false,
  ]);
});
