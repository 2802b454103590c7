/**
 * The feed and messages from another epoch over a shared store (lib/cluster/feed.ts, `#behind`):
 * when the store cannot re-read its epoch they are not passed on after the old ids, and a stream
 * of them costs one re-read a second, not one each. (Cases from an outside review.)
 */
import assert from "node:assert/strict";
import type { Broker, BrokerStatus, Envelope } from "../lib/cluster/broker.ts";
import { Feed, type RoomEvents } from "../lib/cluster/feed.ts";
import type { HistoryStore, Message, Recovery } from "../lib/store/history.ts";
import type { MessageEnvelope } from "../lib/cluster/order.ts";
import { FakeClock } from "./helpers.ts";

class FakeBroker implements Broker {
  readonly kind = "fake";
  readonly shared = true;
  status: BrokerStatus = { up: true };
  #handler: (envelope: Envelope) => void = () => {};
  constructor(readonly origin: string) {}
  subscribe(handler: (e: Envelope) => void): void {
    this.#handler = handler;
  }
  publish(envelope: Envelope): void {
    this.#handler(envelope);
  }
  deliver(envelope: Envelope): void {
    this.#handler(envelope);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

class Store implements HistoryStore {
  epoch = "e1";
  head_ = 10;
  refreshes = 0;
  refreshFails = false;
  nextEpoch: string | undefined;
  append(): never {
    throw new Error("unused");
  }
  latest(): Message[] {
    return [];
  }
  after(): Recovery {
    return { messages: [], complete: true };
  }
  head(): number {
    return this.head_;
  }
  close(): void {}
  async refresh(): Promise<void> {
    this.refreshes++;
    await new Promise((r) => setTimeout(r, 1));
    if (this.refreshFails) throw new Error("Redis does not answer");
    if (this.nextEpoch) this.epoch = this.nextEpoch;
  }
}

const env = (epoch: string, id: number): MessageEnvelope => ({
  kind: "message",
  origin: "h1",
  epoch,
  message: { room: "r", id, ts: id, from: "a", text: `${epoch}:${id}` },
});

function setup() {
  const broker = new FakeBroker("h2");
  const store = new Store();
  const lines: string[] = [];
  const events: RoomEvents = {
    message: (_room, e) => lines.push(`message ${e.epoch}:${e.message.id}`),
    passed: (_room, e) => lines.push(`passed ${e.epoch}:${e.message.id}`),
    joined() {},
    left() {},
    renamed() {},
    typing() {},
    clash() {},
    community() {},
    rebased: () => lines.push("rebased"),
    snapshot: () => ({}),
  };
  const clock = new FakeClock();
  const feed = new Feed(broker, store, events, { now: () => clock.now, timers: clock });
  feed.open("r");
  feed.startAt("r", 10);
  return { broker, store, lines, feed };
}

Deno.test("feed: a message from another epoch while the store cannot re-read its own is not delivered after the old ids", async () => {
  const { broker, store, lines, feed } = setup();
  broker.deliver(env("e1", 11));
  store.refreshFails = true; // Redis slow/stalled for the command connection
  for (const id of [1, 2, 3]) broker.deliver(env("e2", id));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(lines, ["message e1:11"]);
  feed.stop();
});

Deno.test("feed: a stream of messages from an epoch the store is not in costs one re-read a second, and each is passed on", async () => {
  const { broker, store, feed, lines } = setup();
  // Envelopes of an instance still storing under an old epoch, one every few ms.
  for (let i = 0; i < 200; i++) {
    broker.deliver(env("e0", 100 + i));
    await new Promise((r) => setTimeout(r, 2));
  }
  assert.ok(store.refreshes <= 2, `${store.refreshes} re-reads for 200 messages in ~0.5 s`);
  assert.equal(lines.filter((l) => l.startsWith("message e0:")).length, 200);
  feed.stop();
});
