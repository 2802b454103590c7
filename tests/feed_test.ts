/**
 * The cluster layer under the hub (lib/cluster/feed.ts), in-process: a fake broker the test delivers
 * through, a fake store, and a fake clock for gap waits. What the hub would hear is a list of
 * lines.
 */

import assert from "node:assert/strict";
import type { Broker, BrokerStatus, Envelope } from "../lib/cluster/broker.ts";
import { Feed, type RoomEvents } from "../lib/cluster/feed.ts";
import type { HistoryStore, Message, Recovery } from "../lib/store/history.ts";
import type { MessageEnvelope } from "../lib/cluster/order.ts";
import { FakeClock } from "./helpers.ts";

/** A broker whose other hubs are the test: `deliver()` hands it their envelopes. */
class FakeBroker implements Broker {
  readonly kind = "fake";
  readonly origin: string;
  readonly shared = true;
  status: BrokerStatus = { up: true };
  published: Envelope[] = [];
  #handler: (envelope: Envelope) => void = () => {};
  #onStatus: (status: BrokerStatus) => void = () => {};

  constructor(origin: string) {
    this.origin = origin;
  }

  subscribe(handler: (e: Envelope) => void, onStatus?: (s: BrokerStatus) => void): void {
    this.#handler = handler;
    if (onStatus) this.#onStatus = onStatus;
  }

  publish(envelope: Envelope): void {
    this.published.push(envelope);
    this.#handler(envelope);
  }

  deliver(envelope: Envelope): void {
    this.#handler(envelope);
  }

  back(): void {
    this.#onStatus(this.status = { up: true });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** One room's messages 1..head, synchronous; `epoch` changes when the test says it lost data. */
class FakeStore implements HistoryStore {
  epoch = "e1";
  head_ = 0;
  reads = 0;

  message(id: number): Message {
    return { room: "r", id, ts: id, from: "a", text: `m${id}` };
  }
  append(): never {
    throw new Error("not used");
  }
  latest(): Message[] {
    return [];
  }
  after(_room: string, since: number): Recovery {
    this.reads++;
    const messages: Message[] = [];
    for (let id = since + 1; id <= this.head_; id++) messages.push(this.message(id));
    return { messages, complete: true };
  }
  head(): number {
    return this.head_;
  }
  close(): void {}
}

/** A shared store (Redis): it re-reads its epoch when asked, or cannot. */
class SharedStore extends FakeStore {
  refreshes = 0;
  refreshFails = false;
  async refresh(): Promise<void> {
    this.refreshes++;
    await new Promise((r) => setTimeout(r, 1));
    if (this.refreshFails) throw new Error("Redis does not answer");
  }
}

function setup(origin = "h2", store = new FakeStore()) {
  const broker = new FakeBroker(origin);
  const clock = new FakeClock();
  const heard: string[] = [];
  const events: RoomEvents = {
    message: (room, e) => heard.push(`${room} m${e.message.id}`),
    passed: () => {}, // tests/order_test.ts
    joined: (room, name, actor) => heard.push(`${room} +${name}${actor ? ` by ${actor}` : ""}`),
    left: (room, name) => heard.push(`${room} -${name}`),
    renamed: (room, from, to, actor) =>
      heard.push(`${room} ${from}>${to}${actor ? ` by ${actor}` : ""}`),
    typing: (room, name) => heard.push(`${room} typing ${name}`),
    clash: (room, name) => heard.push(`${room} clash ${name}`),
    community: (e) => heard.push(`community ${e.kind}`),
    rebased: () => heard.push("rebased"),
    snapshot: () => ({ r: ["me"] }),
  };
  const feed = new Feed(broker, store, events, {
    now: () => clock.now,
    heartbeatMs: 1_000_000,
    gapMs: 200,
    timers: clock,
  });
  const message = (id: number, from = "h1", epoch = store.epoch): MessageEnvelope => ({
    kind: "message",
    origin: from,
    epoch,
    message: store.message(id),
  });
  return { broker, store, clock, heard, feed, message };
}

Deno.test("feed: the hub hears only rooms it opened; its own changes name their actor", () => {
  const { broker, heard, feed } = setup("a"); // "a" < "h1": no name clash to yield
  feed.open("r");
  broker.deliver({ kind: "joined", origin: "h1", seq: 1, room: "r", ts: 1, name: "ann" });
  broker.deliver({ kind: "joined", origin: "h1", seq: 2, room: "elsewhere", ts: 1, name: "bob" });
  feed.joined("r", "me", "c1");
  feed.renamed("r", "me", "me2", "c1");
  broker.deliver({ kind: "typing", origin: "h1", room: "r", ts: 2, name: "ann", actor: "x" });
  broker.deliver({ kind: "left", origin: "h1", seq: 3, room: "r", ts: 3, name: "ann" });
  assert.deepEqual(heard, ["r +ann", "r +me by c1", "r me>me2 by c1", "r typing ann", "r -ann"]);
  // The room it did not open is still in the view of the other hubs.
  assert.deepEqual(feed.view.names("elsewhere", 10), ["bob"]);
  feed.close("r");
  broker.deliver({ kind: "joined", origin: "h1", seq: 4, room: "r", ts: 4, name: "cat" });
  assert.equal(heard.length, 5);
  feed.stop();
});

Deno.test("feed: messages reach the hub in id order and once, whatever order they come in", () => {
  const { broker, store, heard, feed, message } = setup();
  store.head_ = 0;
  feed.open("r");
  feed.startAt("r", 0);
  store.head_ = 3;
  broker.deliver(message(2));
  broker.deliver(message(1));
  broker.deliver(message(1));
  broker.deliver(message(3));
  assert.deepEqual(heard, ["r m1", "r m2", "r m3"]);
  assert.equal(feed.delivered("r", 3), true);
  assert.equal(feed.delivered("r", 4), false);
  feed.stop();
});

Deno.test("feed: a message that never comes is read from the store after the gap wait", () => {
  const { broker, store, clock, heard, feed, message } = setup();
  feed.open("r");
  feed.startAt("r", 0);
  store.head_ = 2;
  broker.deliver(message(2)); // 1 is lost in transit
  assert.deepEqual(heard, []);
  clock.advance(199);
  assert.deepEqual(heard, []);
  clock.advance(1);
  assert.deepEqual(heard, ["r m1", "r m2"]);
  feed.stop();
});

Deno.test("feed: a store in a new epoch starts every room afresh, and the hub hears it once", () => {
  const { broker, store, heard, feed, message } = setup();
  feed.open("r");
  feed.startAt("r", 0);
  store.head_ = 5;
  broker.deliver(message(5)); // held: 1–4 missing
  store.epoch = "e2"; // the store lost its data
  store.head_ = 0;
  broker.deliver(message(1)); // the first message of the new id space
  assert.deepEqual(heard, ["rebased", "r m1"]);
  assert.equal(feed.rebaseIfNeeded(), false);
  feed.stop();
});

Deno.test("feed: a message from a hub with a store of its own passes as it comes", () => {
  const { broker, heard, feed } = setup();
  feed.open("r");
  const foreign = (id: number): Envelope => ({
    kind: "message",
    origin: "w2",
    epoch: "other",
    message: { room: "r", id, ts: id, from: "z", text: "x" },
  });
  broker.deliver(foreign(7));
  broker.deliver(foreign(7));
  assert.deepEqual(heard, ["r m7", "r m7"]);
  feed.stop();
});

Deno.test("feed: of one name taken on two hubs, the hub with the greater origin yields", () => {
  const low = setup("a");
  const high = setup("b");
  for (const { feed, broker } of [low, high]) {
    feed.open("r");
    broker.deliver({ kind: "joined", origin: "m", seq: 1, room: "r", ts: 1, name: "x" });
    broker.deliver({ kind: "renamed", origin: "0", seq: 1, room: "r", ts: 1, from: "y", to: "z" });
    feed.stop();
  }
  // "a" < "m": a keeps its holder; "0" < "a" and "b": both yield to the hub named "0".
  assert.deepEqual(low.heard, ["r +x", "r y>z", "r clash z"]);
  assert.deepEqual(high.heard, ["r +x", "r y>z", "r clash z"]);
  const mid = setup("n");
  mid.feed.open("r");
  mid.broker.deliver({ kind: "joined", origin: "m", seq: 1, room: "r", ts: 1, name: "x" });
  assert.deepEqual(mid.heard, ["r +x", "r clash x"]);
  mid.feed.stop();
});

Deno.test("feed: back from an outage, it says hello and catches up what was lost meanwhile", () => {
  const { broker, store, heard, feed } = setup();
  feed.open("r");
  feed.startAt("r", 0);
  store.head_ = 2; // two messages were stored while the bus was down
  broker.published = [];
  broker.back();
  assert.deepEqual(broker.published.map((e) => e.kind), ["hello"]);
  assert.deepEqual(heard, ["r m1", "r m2"]);
  feed.stop();
});

Deno.test("feed: a snapshot and a hub's expiry reach the hub as joins and leaves", () => {
  const { broker, clock, heard, feed } = setup();
  feed.open("r");
  // The first snapshot is what the hub found at its start: nobody came.
  broker.deliver({ kind: "snapshot", origin: "z1", seq: 0, rooms: { r: ["ann"], q: ["bob"] } });
  assert.deepEqual(heard, []);
  // A later one (after a gap) tells the difference.
  broker.deliver({ kind: "snapshot", origin: "z1", seq: 3, rooms: { r: ["ann", "cy"] } });
  assert.deepEqual(heard, ["r +cy"]);
  broker.deliver({ kind: "bye", origin: "z1" });
  assert.deepEqual(heard, ["r +cy", "r -ann", "r -cy"]);
  assert.equal(feed.view.size, 0);
  clock.advance(1);
  feed.stop();
});

// Messages from another epoch over a shared store (cases from an outside review).

Deno.test("feed: a message from another epoch while the store cannot re-read its own is not delivered after the old ids", async () => {
  const store = new SharedStore();
  store.head_ = 10;
  const { broker, heard, feed, message } = setup("h2", store);
  feed.open("r");
  feed.startAt("r", 10);
  broker.deliver(message(11));
  store.refreshFails = true; // Redis slow or stalled for the command connection
  for (const id of [1, 2, 3]) broker.deliver(message(id, "h1", "e2"));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(heard, ["r m11"]);
  feed.stop();
});

Deno.test("feed: a stream of messages from an epoch the store is not in costs one re-read a second, and each is passed on", async () => {
  const store = new SharedStore();
  store.head_ = 10;
  const { broker, heard, feed, message } = setup("h2", store);
  feed.open("r");
  feed.startAt("r", 10);
  // Envelopes of an instance still storing under an old epoch, one every few ms.
  for (let i = 0; i < 200; i++) {
    broker.deliver(message(100 + i, "h1", "e0"));
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.ok(store.refreshes <= 2, `${store.refreshes} re-reads for 200 messages in ~0.5 s`);
  assert.equal(heard.filter((l) => l.startsWith("r m")).length, 200);
  feed.stop();
});
