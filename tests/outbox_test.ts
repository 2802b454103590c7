import assert from "node:assert/strict";
import { MAX_FRAME_BYTES, Outbox, stopFlushing } from "../lib/outbox.ts";
import { utf8Length } from "../lib/protocol.ts";

/** Pushes an event with its real UTF-8 length, as the hub does. */
function push(outbox: Outbox, event: string): void {
  outbox.push(event, utf8Length(event));
}

/** Runs the end-of-turn flush now and releases the flush channel (so no resource outlives a test). */
function endOfTurn(): void {
  stopFlushing();
}

Deno.test("Outbox sends the first event of a quiet turn at once and packs the rest into one frame", () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  push(outbox, "one");
  assert.deepEqual(frames, ["one"], "a lone message leaves at once");
  push(outbox, "two");
  push(outbox, "three");
  assert.deepEqual(frames, ["one"], "the rest wait for the end of the turn");
  assert.equal(outbox.queued, 8);
  endOfTurn();
  assert.deepEqual(frames, ["one", "two\nthree"]);
  assert.equal(outbox.queued, 0);
  // That turn queued events: the next one's first event waits for its end too, so a
  // connection under load gets one write per turn, not two.
  push(outbox, "busy turn");
  assert.deepEqual(frames.at(-1), "two\nthree", "after a busy turn, the first event waits");
  endOfTurn();
  assert.deepEqual(frames.at(-1), "busy turn");
  // It stays busy while every turn queues something for it, even a single event.
  push(outbox, "still busy");
  assert.deepEqual(frames.at(-1), "busy turn", "a turn of one event after a busy one waits too");
  endOfTurn();
  assert.deepEqual(frames.at(-1), "still busy");
  // A turn that brings it nothing makes it quiet again: the next event leaves at once.
  endOfTurn();
  push(outbox, "quiet again");
  assert.deepEqual(frames.at(-1), "quiet again", "a quiet connection sends at once");
  endOfTurn();
});

Deno.test("Outbox: a pause of the whole server makes a busy connection quiet again", async () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  push(outbox, "a");
  push(outbox, "b");
  endOfTurn();
  push(outbox, "c");
  assert.deepEqual(frames, ["a", "b"], "busy: the first event of the next turn waits");
  endOfTurn();
  await new Promise((resolve) => setTimeout(resolve, 10));
  push(outbox, "after a pause");
  assert.deepEqual(frames.at(-1), "after a pause", "after a pause the first event leaves at once");
  endOfTurn();
});

Deno.test("Outbox flushes by itself at the end of the turn", async () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  push(outbox, "a");
  push(outbox, "b");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(frames, ["a", "b"]);
  endOfTurn();
});

Deno.test("Outbox keeps packed frames within MAX_FRAME_BYTES, counting UTF-8 bytes", () => {
  const frames: string[] = [];
  const outbox = new Outbox((frame) => frames.push(frame));
  push(outbox, "first");
  const line = "漢".repeat(5400); // 16,200 bytes in 5,400 characters
  for (let i = 0; i < 15; i++) push(outbox, line);
  endOfTurn();
  const packed = frames.slice(1);
  assert.ok(packed.length >= 4, `${packed.length} frames`);
  for (const frame of packed) {
    assert.ok(utf8Length(frame) <= MAX_FRAME_BYTES, `${utf8Length(frame)} bytes`);
  }
  assert.equal(packed.join("\n"), Array(15).fill(line).join("\n"), "nothing lost, order kept");
  const big = "x".repeat(MAX_FRAME_BYTES * 2);
  push(outbox, "now");
  push(outbox, big);
  endOfTurn();
  assert.equal(frames.at(-1), big, "a single event bigger than a frame still goes, alone");
});

Deno.test("Outbox: identical batches are joined once and shared; discard forgets", () => {
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => new Outbox((frame) => list.push(frame)));
  for (const box of boxes) push(box, "hello");
  for (const line of ["a", "b", "c"]) for (const box of boxes) push(box, line);
  boxes[2]!.discard();
  const join = Array.prototype.join;
  let joins = 0;
  Array.prototype.join = function (this: unknown[], separator?: string) {
    joins++;
    return join.call(this, separator);
  };
  try {
    endOfTurn();
  } finally {
    Array.prototype.join = join;
  }
  assert.deepEqual(frames, [["hello", "a\nb\nc"], ["hello", "a\nb\nc"], ["hello"]]);
  assert.equal(joins, 1, "two identical batches, one join");
});

Deno.test("Outbox: a sink that throws does not keep other outboxes' frames back", () => {
  const good: string[] = [];
  const failing = new Outbox(() => {
    throw new Error("socket gone");
  });
  const working = new Outbox((frame) => good.push(frame));
  push(working, "1");
  try {
    push(failing, "x");
  } catch {
    // the immediate send fails in the caller, as a direct send would
  }
  push(failing, "y");
  push(working, "2");
  endOfTurn();
  assert.deepEqual(good, ["1", "2"]);
});
