/**
 * A room's message order (lib/cluster/order.ts), in-process: a fake store that answers now or later,
 * and a fake clock whose timers run only when the test says so.
 */

import assert from "node:assert/strict";
import type { Message, Recovery } from "../lib/store/history.ts";
import { type MessageEnvelope, type OrderHost, RoomOrder } from "../lib/cluster/order.ts";
import { FakeClock } from "./helpers.ts";

/** A store holding messages 1..head of one room, some of them no longer kept. */
class FakeStore {
  epoch = "e1";
  head = 0;
  /** Ids the store no longer keeps. */
  dropped = new Set<number>();
  /** When set, reads fail (a store that is down). */
  down = false;
  /** When set, reads answer only when the test calls `answer()`. */
  slow = false;
  #waiting: (() => void)[] = [];

  message(id: number): Message {
    return { room: "r", id, ts: id, from: "a", text: `m${id}` };
  }

  headOf(): number | Promise<number> {
    return this.#answer(() => this.head);
  }

  afterOf(since: number): Recovery | Promise<Recovery> {
    return this.#answer(() => {
      const messages: Message[] = [];
      for (let id = since + 1; id <= this.head; id++) {
        if (!this.dropped.has(id)) messages.push(this.message(id));
      }
      return { messages, complete: messages[0]?.id === since + 1 || since === this.head };
    });
  }

  answer(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const run of waiting) run();
  }

  #answer<T>(read: () => T): T | Promise<T> {
    if (this.down) throw new Error("store down");
    if (!this.slow) return read();
    return new Promise((resolve) => this.#waiting.push(() => resolve(read())));
  }
}

function setup(gapMs = 200) {
  const clock = new FakeClock();
  const store = new FakeStore();
  const delivered: number[] = [];
  const passed: number[] = [];
  const host: OrderHost = {
    store: {
      get epoch() {
        return store.epoch;
      },
      head: () => store.headOf(),
      after: (_room, since) => store.afterOf(since),
    },
    deliver: (envelope) => delivered.push(envelope.message.id),
    passed: (envelope) => passed.push(envelope.message.id),
    later: (run, ms) => clock.later(run, ms),
    cancel: (timer) => clock.cancel(timer),
    gapMs,
  };
  const order = new RoomOrder("r", host);
  const envelope = (id: number): MessageEnvelope => ({
    kind: "message",
    origin: "other",
    epoch: store.epoch,
    message: store.message(id),
  });
  /** The store stores id (its head moves) and the envelope arrives. */
  const arrive = (id: number) => {
    store.head = Math.max(store.head, id);
    order.accept(envelope(id));
  };
  return { clock, store, delivered, passed, order, envelope, arrive };
}

Deno.test("order: messages in order go out at once; a repeated id is dropped", () => {
  const { order, delivered, arrive, clock } = setup();
  order.startAt(0);
  for (const id of [1, 2, 3]) arrive(id);
  arrive(2);
  assert.deepEqual(delivered, [1, 2, 3]);
  assert.equal(clock.pending, 0, "no timer when nothing is missing");
  assert.ok(order.delivered(3) && !order.delivered(4));
});

Deno.test("order: what arrived before the start, or arrives from before it, is passed, not delivered", () => {
  const { order, delivered, passed, arrive } = setup();
  arrive(1); // held: the room's position is not known yet
  arrive(2);
  order.startAt(2); // a welcome read the store up to 2: it carried both
  arrive(3);
  order.accept(setup().envelope(2)); // a second way for 2
  assert.deepEqual(delivered, [3]);
  assert.deepEqual(passed, [1, 2, 2], "each copy that is not delivered is passed on as such");
});

Deno.test("order: one that arrives early waits for the one before it, then both go in order", () => {
  const { order, delivered, arrive, clock } = setup();
  order.startAt(0);
  arrive(1);
  arrive(3);
  assert.deepEqual(delivered, [1], "3 waits for 2");
  clock.advance(100);
  arrive(2);
  assert.deepEqual(delivered, [1, 2, 3]);
  assert.equal(clock.pending, 0, "the gap timer is gone once the gap is filled");
});

Deno.test("order: a gap that does not fill in time is filled from the store", () => {
  const { order, delivered, arrive, clock, store } = setup(200);
  order.startAt(0);
  arrive(1);
  store.head = 2; // 2 was stored, but its envelope was lost
  arrive(3);
  clock.advance(199);
  assert.deepEqual(delivered, [1], "not before the gap wait");
  clock.advance(1);
  assert.deepEqual(delivered, [1, 2, 3], "2 from the store, then the held 3");
});

Deno.test("order: what the store no longer keeps is skipped, and delivery goes on", () => {
  const { order, delivered, arrive, clock, store } = setup();
  order.startAt(0);
  arrive(1);
  store.head = 3;
  store.dropped = new Set([2, 3]);
  arrive(4);
  clock.advance(200);
  assert.deepEqual(delivered, [1, 4]);
  arrive(5);
  assert.deepEqual(delivered, [1, 4, 5]);
});

Deno.test("order: a message lost after the last one is found by a catch-up (the bus came back)", () => {
  const { order, delivered, arrive, store } = setup();
  order.startAt(0);
  arrive(1);
  store.head = 3; // 2 and 3 were published while the bus was down
  order.catchUp();
  assert.deepEqual(delivered, [1, 2, 3]);
});

Deno.test("order: before the position is known, messages are held; a failed welcome is caught up from the store", () => {
  const { delivered, arrive, clock, store } = setup();
  store.head = 5;
  arrive(6);
  arrive(7);
  assert.deepEqual(delivered, [], "position unknown: held");
  clock.advance(200);
  assert.deepEqual(delivered, [6, 7], "from the first held one");
});

Deno.test("order: a store that cannot answer is asked again a second later", () => {
  const { order, delivered, arrive, clock, store } = setup();
  order.startAt(0);
  arrive(1);
  store.head = 2;
  store.down = true;
  arrive(3);
  clock.advance(200);
  assert.deepEqual(delivered, [1]);
  store.down = false;
  clock.advance(999);
  assert.deepEqual(delivered, [1], "not before the retry");
  clock.advance(1);
  assert.deepEqual(delivered, [1, 2, 3]);
});

Deno.test("order: a slow store's answer changes nothing once the room is gone", async () => {
  const { order, delivered, arrive, clock, store } = setup();
  order.startAt(0);
  store.slow = true;
  store.head = 2;
  arrive(3);
  clock.advance(200); // asks the store
  order.stop();
  store.answer();
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(delivered, []);
  assert.equal(clock.pending, 0, "no timer left behind");
  arrive(4);
  assert.deepEqual(delivered, [], "a stopped room delivers nothing");
});

Deno.test("order: an epoch change forgets the old position and what is held, and starts from the new head", async () => {
  const { order, delivered, arrive, clock, store, envelope } = setup();
  order.startAt(0);
  arrive(1);
  arrive(2);
  arrive(5); // held: 3 and 4 missing
  store.epoch = "e2";
  store.head = 0; // the new id space starts again
  store.slow = true;
  order.reset();
  assert.equal(clock.pending, 0, "the old gap timer is gone, with the held 5");
  order.accept(envelope(1)); // the new space's 1 arrives before the head read answers: held
  store.answer(); // the head read: 0
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(delivered, [1, 2, 1], "1 and 2 of the old space, then 1 of the new one");
  store.slow = false;
  arrive(2);
  assert.deepEqual(delivered, [1, 2, 1, 2]);
  clock.advance(10_000);
  assert.deepEqual(delivered, [1, 2, 1, 2], "the old space's 5 never comes out");
});

Deno.test("order: a welcome's head read sets the position only once", () => {
  const { order, delivered, arrive } = setup();
  order.startAt(3);
  order.startAt(0); // a second welcome read an older head: ignored
  arrive(4);
  arrive(2);
  assert.deepEqual(delivered, [4]);
});
