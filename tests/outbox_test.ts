import assert from "node:assert/strict";
import {
  MAX_FRAME_BYTES,
  Outbox,
  SEND_AT_BYTES,
  type Sink,
  Turns,
} from "../lib/transport/outbox.ts";
import { utf8Length } from "../lib/protocol/protocol.ts";

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

/**
 * The turns of the tests' outboxes, as an app owns one, with every event waiting for its turn's
 * end (sending at once on a quiet server has tests of its own, at the end).
 */
const turns = new Turns({ atOnce: false });

/** An outbox of the tests' turns. */
function box(sink: Sink, lane = 0): Outbox {
  return new Outbox(turns, sink, lane);
}

/** Runs the end-of-turn flush now and cancels the pending one (so no timer outlives a test). */
function endOfTurn(): void {
  turns.flushNow();
}

Deno.test("Outbox packs a turn's events into one frame, sent when the turn ends", () => {
  const frames: string[] = [];
  const outbox = box((frame) => frames.push(frame));
  push(outbox, "one");
  push(outbox, "two");
  push(outbox, "three");
  assert.deepEqual(frames, [], "nothing leaves before the end of the turn");
  assert.equal(outbox.queued, 11);
  endOfTurn();
  assert.deepEqual(frames, ["one\ntwo\nthree"], "one write for the turn");
  assert.equal(outbox.queued, 0);
  // A turn of one event: one frame of one line.
  push(outbox, "lone");
  endOfTurn();
  assert.deepEqual(frames.at(-1), "lone");
  // A turn that brings it nothing sends nothing.
  endOfTurn();
  assert.equal(frames.length, 2);
});

Deno.test("Turns: one app's flush sends its own outboxes' frames and leaves another app's alone", async () => {
  const mine: string[] = [];
  const theirs: string[] = [];
  const other = new Turns({ atOnce: false });
  push(box((frame) => mine.push(frame)), "mine");
  push(new Outbox(other, (frame) => theirs.push(frame)), "theirs");
  endOfTurn(); // this app shuts down
  assert.deepEqual(mine, ["mine"]);
  assert.deepEqual(theirs, [], "the other app's frame waits for its own turn's end");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(theirs, ["theirs"]);
});

Deno.test("Outbox flushes by itself at the end of the turn", async () => {
  const frames: string[] = [];
  const outbox = box((frame) => frames.push(frame));
  push(outbox, "a");
  push(outbox, "b");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(frames, ["a\nb"]);
  endOfTurn();
});

Deno.test("Outbox keeps packed frames within MAX_FRAME_BYTES, counting UTF-8 bytes", () => {
  const frames: string[] = [];
  const outbox = box((frame) => frames.push(frame));
  const line = "漢".repeat(5400); // 16,200 bytes in 5,400 characters
  for (let i = 0; i < 15; i++) push(outbox, line);
  endOfTurn();
  const packed = frames;
  assert.ok(packed.length >= 4, `${packed.length} frames`);
  for (const frame of packed) {
    assert.ok(utf8Length(frame) <= MAX_FRAME_BYTES, `${utf8Length(frame)} bytes`);
  }
  assert.equal(packed.join("\n"), Array(15).fill(line).join("\n"), "nothing lost, order kept");
  const big = "x".repeat(MAX_FRAME_BYTES * 2);
  push(outbox, "before");
  push(outbox, big);
  endOfTurn();
  assert.deepEqual(
    frames.slice(-2),
    ["before", big],
    "a single event bigger than a frame goes alone",
  );
});

Deno.test("Outbox: identical batches are joined once and shared; discard forgets", () => {
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => box((frame) => list.push(frame)));
  for (const line of ["a", "b", "c"]) for (const box of boxes) push(box, line, ROOM);
  boxes[2]!.discard();
  const joins = joinsIn(endOfTurn);
  assert.deepEqual(frames, [["a\nb\nc"], ["a\nb\nc"], []]);
  assert.equal(joins, 1, "two identical batches, one join");
});

Deno.test("Outbox: a sink that throws does not keep other outboxes' frames back", () => {
  const good: string[] = [];
  const failing = box(() => {
    throw new Error("socket gone");
  });
  const working = box((frame) => good.push(frame));
  push(failing, "x");
  push(working, "1");
  push(failing, "y");
  push(working, "2");
  endOfTurn();
  assert.deepEqual(good, ["1\n2"]);
});

Deno.test("Outbox: a broadcast's recipients share one log entry and one joined frame", () => {
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => box((frame) => list.push(frame)));
  // Three broadcasts to all three, then one more event for the last box only.
  for (const line of ["a", "b", "a"]) for (const box of boxes) push(box, line, ROOM);
  push(boxes[2]!, "only for the last");
  const joins = joinsIn(endOfTurn);
  assert.deepEqual(frames, [
    ["a\nb\na"],
    ["a\nb\na"],
    ["a\nb\na\nonly for the last"],
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
  const boxes = sent.map((list) => box((frame) => list.push(frame)));
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

Deno.test("Outbox: a long shared run leaves in frames of SEND_AT_BYTES as it grows, joined once for all", () => {
  const frames: string[][] = [[], []];
  const boxes = frames.map((list) => box((frame) => list.push(frame)));
  const lines = Array.from({ length: 40 }, (_, i) => `${i}:${"ü".repeat(2000)}`); // 4 KB each
  for (const line of lines) for (const box of boxes) push(box, line, ROOM);
  // 160 KB were queued: all but the last few KB left while the turn went on.
  assert.ok(frames[0]!.length >= 4, `${frames[0]!.length} frames before the turn's end`);
  assert.ok(boxes[0]!.queued < SEND_AT_BYTES, `${boxes[0]!.queued} bytes still queued`);
  const joins = joinsIn(endOfTurn);
  assert.deepEqual(frames[1], frames[0]);
  for (const list of frames) {
    for (const frame of list) {
      assert.ok(utf8Length(frame) <= MAX_FRAME_BYTES);
      assert.ok(
        utf8Length(frame) >= SEND_AT_BYTES || frame === list.at(-1),
        "only the last is short",
      );
    }
    assert.equal(list.join("\n"), lines.join("\n"));
  }
  assert.ok(joins <= 1, "the turn's last frame joined once for both outboxes");
});

Deno.test("Outbox: a queue that grows past SEND_AT_BYTES leaves at once; a small one waits for the turn's end", () => {
  const frames: string[] = [];
  const outbox = box((frame) => frames.push(frame));
  push(outbox, "small");
  assert.deepEqual(frames, []);
  const big = "y".repeat(SEND_AT_BYTES);
  push(outbox, big);
  assert.deepEqual(frames, [`small\n${big}`], "past the threshold: sent within the turn");
  assert.equal(outbox.queued, 0);
  push(outbox, "after");
  assert.equal(frames.length, 1, "what follows waits for the turn's end again");
  endOfTurn();
  assert.deepEqual(frames.at(-1), "after");
});

Deno.test("Outbox: in a room of both formats, each format's recipients share their frames", () => {
  // A broadcast queues its text line and its JSON line for members in turn: each format keeps
  // its own lane, so its recipients' runs stay whole.
  const frames: string[][] = Array.from({ length: 6 }, () => []);
  const boxes = frames.map((list, i) => box((frame) => list.push(frame), i % 2));
  for (let n = 0; n < 3; n++) {
    boxes.forEach((box, i) => push(box, i % 2 ? `{"n":${n}}` : `* ${n}`, ROOM));
  }
  const joins = joinsIn(endOfTurn);
  assert.equal(joins, 2, "one frame joined per format");
  frames.forEach((list, i) => {
    assert.deepEqual(list, [i % 2 ? '{"n":0}\n{"n":1}\n{"n":2}' : "* 0\n* 1\n* 2"]);
  });
});

Deno.test("Outbox: an event queued while the turn's flush runs waits for the next flush, in order", async () => {
  const frames: string[] = [];
  let again = true;
  const outbox: Outbox = box((frame) => {
    frames.push(frame);
    // From inside the flush (after a pause long enough to end a turn), queue one more event.
    if (again) {
      again = false;
      const until = performance.now() + 3;
      while (performance.now() < until) { /* a pause of over 1 ms */ }
      push(outbox, "late");
    }
  });
  push(outbox, "a".repeat(40_000));
  push(outbox, "b".repeat(40_000));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(frames, ["a".repeat(40_000), "b".repeat(40_000), "late"]);
  endOfTurn();
});

Deno.test("Outbox: two rooms broadcasting in turn each keep their recipients' shared frames", () => {
  const frames: string[][] = Array.from({ length: 6 }, () => []);
  const boxes = frames.map((list) => box((frame) => list.push(frame)));
  const rooms = [{ room: {}, boxes: boxes.slice(0, 3) }, { room: {}, boxes: boxes.slice(3) }];
  for (let n = 0; n < 3; n++) {
    rooms.forEach(({ room, boxes }, r) => boxes.forEach((box) => push(box, `${r}:${n}`, room)));
  }
  assert.equal(joinsIn(endOfTurn), 2, "one frame joined per room");
  frames.forEach((list, i) => {
    const r = i < 3 ? 0 : 1;
    assert.deepEqual(list, [`${r}:0\n${r}:1\n${r}:2`]);
  });
});

/** Lets the event loop finish this iteration (what sent at once, then a turn's end). */
function nextIteration(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 5));
}

Deno.test("Turns: on a quiet server a broadcast goes to every recipient at once; the rest of that iteration waits for its turn's end", async () => {
  const quiet = new Turns();
  const frames: string[][] = [[], [], []];
  const boxes = frames.map((list) => new Outbox(quiet, (frame) => list.push(frame)));
  for (const outbox of boxes) push(outbox, "first", ROOM);
  assert.deepEqual(frames, [["first"], ["first"], ["first"]], "sent before the turn ends");
  await Promise.resolve(); // the broadcast's run of code is over
  for (const outbox of boxes) push(outbox, "second", ROOM);
  for (const outbox of boxes) push(outbox, "third", ROOM);
  assert.deepEqual(frames[0], ["first"], "a burst's later events wait for the turn's end");
  await nextIteration();
  assert.deepEqual(frames, [0, 1, 2].map(() => ["first", "second\nthird"]));
  // That turn gave each outbox two events: the server is busy, the next event waits too.
  push(boxes[0]!, "fourth", ROOM);
  assert.deepEqual(frames[0], ["first", "second\nthird"]);
  await nextIteration();
  assert.deepEqual(frames[0], ["first", "second\nthird", "fourth"]);
  // A turn of one event each: quiet again, the next one goes at once.
  await nextIteration();
  push(boxes[1]!, "fifth", ROOM);
  assert.deepEqual(frames[1], ["first", "second\nthird", "fifth"]);
  quiet.flushNow();
  await nextIteration();
});

Deno.test("Turns: nothing sent at once overtakes what an outbox has queued", async () => {
  const quiet = new Turns();
  const frames: string[] = [];
  const outbox = new Outbox(quiet, (frame) => frames.push(frame));
  const other = new Outbox(quiet, () => {});
  push(outbox, "a"); // at once
  await Promise.resolve();
  push(outbox, "b"); // same iteration: queued
  await nextIteration();
  push(other, "c"); // quiet again: at once, for the other outbox
  push(outbox, "d"); // another event in the same run: it waits for the turn's end
  assert.deepEqual(frames, ["a", "b"]);
  await nextIteration();
  assert.deepEqual(frames, ["a", "b", "d"]);
});

Deno.test("Turns: of several broadcasts in one run (messages from several sockets in one read), only the first goes at once", async () => {
  const quiet = new Turns();
  const frames: string[][] = [[], [], [], []];
  const boxes = frames.map((list, i) => new Outbox(quiet, (frame) => list.push(frame), i % 2));
  // One broadcast in two formats (lanes 0 and 1): each lane's line goes at once.
  boxes.forEach((outbox, i) => push(outbox, i % 2 ? '{"n":1}' : "n1", ROOM));
  // Two more broadcasts in the same run, before any microtask: they wait, packed.
  for (const n of [2, 3]) {
    boxes.forEach((outbox, i) => push(outbox, i % 2 ? `{"n":${n}}` : `n${n}`, ROOM));
  }
  assert.deepEqual(frames, [["n1"], ['{"n":1}'], ["n1"], ['{"n":1}']]);
  await nextIteration();
  assert.deepEqual(frames[0], ["n1", "n2\nn3"]);
  assert.deepEqual(frames[1], ['{"n":1}', '{"n":2}\n{"n":3}']);
  // That turn packed two events a socket: busy, so the next broadcast waits for its turn's end.
  push(boxes[0]!, "n4", ROOM);
  assert.deepEqual(frames[0], ["n1", "n2\nn3"]);
  await nextIteration();
  assert.deepEqual(frames[0], ["n1", "n2\nn3", "n4"]);
});

Deno.test("Turns: an outbox forgotten and queued to again in one turn is flushed once, with what came after", () => {
  const frames: string[] = [];
  const outbox = box((frame) => frames.push(frame));
  const other = box(() => {});
  push(other, "x");
  push(outbox, "before");
  outbox.discard(); // its connection went: forgotten
  push(outbox, "after"); // on the flush list a second time
  endOfTurn();
  assert.deepEqual(frames, ["after"]);
  endOfTurn();
  assert.deepEqual(frames, ["after"], "nothing is left to flush");
});
