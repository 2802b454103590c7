import assert from "node:assert/strict";
import { MAX_FRAME_CHARS, Outbox } from "../lib/outbox.ts";

/** Resolves after the outbox's end-of-turn flush (a MessageChannel task) has run. */
function endOfTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 5));
}

Deno.test("Outbox sends the first event of a turn at once and packs the rest into one frame", async () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  outbox.push("one");
  assert.deepEqual(frames, ["one"], "a lone message leaves at once");
  outbox.push("two");
  outbox.push("three");
  assert.deepEqual(frames, ["one"], "the rest wait for the end of the turn");
  assert.equal(outbox.queued, "two".length + "three".length);
  await endOfTurn();
  assert.deepEqual(frames, ["one", "two\nthree"]);
  assert.equal(outbox.queued, 0);
  outbox.push("next turn");
  assert.deepEqual(frames.at(-1), "next turn", "a new turn starts with an immediate send");
  await endOfTurn();
});

Deno.test("Outbox splits a big batch into frames of at most MAX_FRAME_CHARS", async () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  outbox.push("first");
  const line = "y".repeat(10_000);
  for (let i = 0; i < 20; i++) outbox.push(line);
  await endOfTurn();
  const packed = frames.slice(1);
  assert.ok(packed.length >= 3, `${packed.length} frames`);
  assert.ok(packed.every((frame) => frame.length <= MAX_FRAME_CHARS));
  assert.equal(packed.join("\n"), Array(20).fill(line).join("\n"), "nothing lost, order kept");
});

Deno.test("Outbox: identical batches for many recipients share one joined string, and discard forgets", async () => {
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => new Outbox((frame) => list.push(frame)));
  for (const box of boxes) box.push("hello");
  for (const line of ["a", "b", "c"]) for (const box of boxes) box.push(line);
  boxes[2]!.discard();
  await endOfTurn();
  assert.deepEqual(frames, [["hello", "a\nb\nc"], ["hello", "a\nb\nc"], ["hello"]]);
});
