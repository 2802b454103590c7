import assert from "node:assert/strict";
import { MAX_FRAME_BYTES, Outbox, stopFlushing } from "../lib/outbox.ts";
import { utf8Length } from "../lib/protocol.ts";

/** Pushes an event with its real UTF-8 length, as the hub does (with its room, if broadcast). */
function push(outbox: Outbox, event: string, room?: object): void {
  outbox.push(event, utf8Length(event), room);
}

/** A room, as the stream of its broadcasts. */
const ROOM = {};

/** How many times `run` joins an array (each join builds a frame string). */
function joinsIn(run: () => void): number {
  const join = Array.prototype.join;
  let joins = 0;
  Array.prototype.join = function (this: unknown[], separator?: string) {
    joins++;
    return join.call(this, separator);
  };
  try {
    run();
  } finally {
    Array.prototype.join = join;
  }
  return joins;
}

/** Runs the end-of-turn flush now and cancels the pending one (so no timer outlives a test). */
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
  for (const line of ["a", "b", "c"]) for (const box of boxes) push(box, line, ROOM);
  boxes[2]!.discard();
  const joins = joinsIn(endOfTurn);
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

Deno.test("Outbox: a broadcast's recipients share one log entry and one joined frame", () => {
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => new Outbox((frame) => list.push(frame)));
  for (const box of boxes) push(box, "first"); // direct: each box is quiet
  // Three broadcasts to all three, then one more event for the last box only.
  for (const line of ["a", "b", "a"]) for (const box of boxes) push(box, line, ROOM);
  push(boxes[2]!, "only for the last");
  const joins = joinsIn(endOfTurn);
  assert.deepEqual(frames, [
    ["first", "a\nb\na"],
    ["first", "a\nb\na"],
    ["first", "a\nb\na\nonly for the last"],
  ]);
  assert.equal(joins, 2, "one join for the two identical runs, one for the longer");
});

Deno.test("Outbox: interleaved rooms, repeated and equal events, every turn: nothing lost or reordered", () => {
  // A small deterministic generator, so that a failure can be replayed.
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const count = 12;
  const sent: string[][] = Array.from({ length: count }, () => []);
  const expected: string[][] = Array.from({ length: count }, () => []);
  const boxes = sent.map((list) => new Outbox((frame) => list.push(frame)));
  const rooms = [boxes.slice(0, 5), boxes.slice(5, 9), boxes.slice(3, 12)];
  for (let turnNo = 0; turnNo < 60; turnNo++) {
    const events = Math.floor(random() * 40);
    for (let e = 0; e < events; e++) {
      // Few distinct texts, some built anew each time (equal strings, not always one object).
      const event = ["hello", "é€😀", "x".repeat(1 + Math.floor(random() * 3))][
        Math.floor(random() * 3)
      ]!;
      if (random() < 0.7) {
        const room = rooms[Math.floor(random() * rooms.length)]!;
        for (const box of room) {
          push(box, event, room);
          expected[boxes.indexOf(box)]!.push(event);
        }
      } else {
        const i = Math.floor(random() * count);
        push(boxes[i]!, event);
        expected[i]!.push(event);
      }
    }
    endOfTurn();
  }
  for (let i = 0; i < count; i++) {
    assert.equal(sent[i]!.join("\n"), expected[i]!.join("\n"), `outbox ${i}`);
  }
});

Deno.test("Outbox: a long shared run is cut into frames within MAX_FRAME_BYTES", () => {
  const frames: string[][] = [[], []];
  const boxes = frames.map((list) => new Outbox((frame) => list.push(frame)));
  for (const box of boxes) push(box, "first");
  const lines = Array.from({ length: 40 }, (_, i) => `${i}:${"ü".repeat(2000)}`);
  for (const line of lines) for (const box of boxes) push(box, line, ROOM);
  assert.equal(boxes[0]!.queued, lines.reduce((sum, line) => sum + utf8Length(line), 0));
  const joins = joinsIn(endOfTurn);
  assert.equal(joins, frames[0]!.length - 1, "each frame joined once, for both outboxes");
  assert.deepEqual(frames[1], frames[0]);
  for (const list of frames) {
    const packed = list.slice(1);
    assert.ok(packed.length >= 2, `${packed.length} frames`);
    for (const frame of packed) assert.ok(utf8Length(frame) <= MAX_FRAME_BYTES);
    assert.equal(packed.join("\n"), lines.join("\n"));
  }
});

Deno.test("Outbox: in a room of both formats, each format's recipients share their frames", () => {
  // A broadcast queues its text line and its JSON line for members in turn: each format keeps
  // its own lane, so its recipients' runs stay whole.
  const frames: string[][] = Array.from({ length: 6 }, () => []);
  const boxes = frames.map((list, i) => new Outbox((frame) => list.push(frame), i % 2));
  boxes.forEach((box, i) => push(box, `first ${i}`));
  for (let n = 0; n < 3; n++) {
    boxes.forEach((box, i) => push(box, i % 2 ? `{"n":${n}}` : `* ${n}`, ROOM));
  }
  const joins = joinsIn(endOfTurn);
  assert.equal(joins, 2, "one frame joined per format");
  frames.forEach((list, i) => {
    assert.deepEqual(list, [`first ${i}`, i % 2 ? '{"n":0}\n{"n":1}\n{"n":2}' : "* 0\n* 1\n* 2"]);
  });
});

Deno.test("Outbox: an event queued while the turn's flush runs waits for the next flush, in order", async () => {
  const frames: string[] = [];
  let again = true;
  const outbox: Outbox = new Outbox((frame) => {
    frames.push(frame);
    // From inside the flush (after a pause long enough to end a turn), queue one more event.
    if (again && frame !== "first") {
      again = false;
      const until = performance.now() + 3;
      while (performance.now() < until) { /* a pause of over 1 ms */ }
      push(outbox, "late");
    }
  });
  push(outbox, "first");
  push(outbox, "a".repeat(40_000));
  push(outbox, "b".repeat(40_000));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(frames, ["first", "a".repeat(40_000), "b".repeat(40_000), "late"]);
  endOfTurn();
});

Deno.test("Outbox: two rooms broadcasting in turn each keep their recipients' shared frames", () => {
  const frames: string[][] = Array.from({ length: 6 }, () => []);
  const boxes = frames.map((list) => new Outbox((frame) => list.push(frame)));
  const rooms = [{ room: {}, boxes: boxes.slice(0, 3) }, { room: {}, boxes: boxes.slice(3) }];
  boxes.forEach((box, i) => push(box, `first ${i}`));
  for (let n = 0; n < 3; n++) {
    rooms.forEach(({ room, boxes }, r) => boxes.forEach((box) => push(box, `${r}:${n}`, room)));
  }
  assert.equal(joinsIn(endOfTurn), 2, "one frame joined per room");
  frames.forEach((list, i) => {
    const r = i < 3 ? 0 : 1;
    assert.deepEqual(list, [`first ${i}`, `${r}:0\n${r}:1\n${r}:2`]);
  });
});
