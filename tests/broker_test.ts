/**
 * One suite, every broker: in-process, BroadcastChannel and Redis keep the same promises.
 * Then hubs over each shared broker: chat, presence, names and ids across hubs.
 */

import assert from "node:assert/strict";
import { type Broker, ChannelBroker, type Envelope, LocalBroker } from "../lib/cluster/broker.ts";
import type { HistoryStore } from "../lib/store/history.ts";
import { Hub } from "../lib/chat/hub.ts";
import { SILENT } from "../lib/base/log.ts";
import { RedisLink } from "../lib/store/redis_link.ts";
import { RedisStore } from "../lib/store/redis_store.ts";
import { RedisBroker } from "../lib/cluster/redis_broker.ts";
import { SqliteStore } from "../lib/store/sqlite.ts";
import { FakeConnection, until } from "./helpers.ts";
import { haveRedis, RedisServer } from "./redis_server.ts";

/** A family of brokers that reach each other (or, for the local one, do not). */
interface Family {
  make(): Promise<Broker>;
  /** A history store the hubs of this family share. */
  store(): Promise<HistoryStore>;
  cleanup(): Promise<void>;
}

const redis = haveRedis() ? await RedisServer.start() : undefined;
if (redis) globalThis.addEventListener("unload", () => void redis.kill());

let channels = 0;
const families: Record<string, () => Family> = {
  local: () => ({
    make: () => Promise.resolve(new LocalBroker()),
    store: () => Promise.reject(new Error("a local broker has no peers to share with")),
    cleanup: () => Promise.resolve(),
  }),
  channel: () => {
    // A fresh channel name and database per test, so tests cannot hear each other.
    const name = `natter-test-${++channels}`;
    const dir = Deno.makeTempDirSync({ prefix: "natter-broker-" });
    const path = `${dir}/natter.db`;
    const stores: SqliteStore[] = [];
    return {
      make: () => Promise.resolve(new ChannelBroker(name)),
      store: () => {
        const store = new SqliteStore(path);
        stores.push(store);
        return Promise.resolve(store);
      },
      cleanup: () => {
        for (const store of stores) store.close();
        Deno.removeSync(dir, { recursive: true });
        return Promise.resolve();
      },
    };
  },
};
if (redis) {
  families.redis = () => {
    const links: RedisLink[] = [];
    const link = async () => {
      const made = await RedisLink.open(redis.url, SILENT);
      links.push(made);
      return made;
    };
    return {
      async make() {
        const broker = new RedisBroker(await link());
        return broker;
      },
      async store() {
        return await RedisStore.open(await link());
      },
      async cleanup() {
        await Promise.all(links.map((l) => l.close()));
        assert.ok(links.every((l) => !l.open), "links closed");
        await redis.command("FLUSHALL");
      },
    };
  };
}

function heartbeat(origin: string, seq: number): Envelope {
  return { kind: "heartbeat", origin, seq };
}

/** Subscribes and waits until the broker can hear others (Redis subscribes asynchronously). */
async function listen(broker: Broker, into: Envelope[]): Promise<void> {
  broker.subscribe((envelope) => into.push(envelope));
  if (broker instanceof RedisBroker) await broker.ready();
}

/** Two hubs over two brokers of one family, each with its own handle on a shared store. */
async function twoHubs(f: Family) {
  const [brokerA, brokerB] = [await f.make(), await f.make()];
  const [storeA, storeB] = [await f.store(), await f.store()];
  const hubA = new Hub({ broker: brokerA, store: storeA });
  const hubB = new Hub({ broker: brokerB, store: storeB });
  for (const b of [brokerA, brokerB]) if (b instanceof RedisBroker) await b.ready();
  const stop = async () => {
    for (const hub of [hubA, hubB]) {
      hub.stop();
      hub.closeAll(1001, "test over");
    }
    await Promise.all([brokerA.close(), brokerB.close()]);
    await Promise.all([storeA.close(), storeB.close()]);
  };
  try {
    await until(() => hubA.peers === 1 && hubB.peers === 1, "the hubs to hear each other");
  } catch (error) {
    await stop();
    throw error;
  }
  return { hubA, hubB, brokerA, brokerB, stop };
}

for (const [kind, family] of Object.entries(families)) {
  const test = (name: string, fn: (f: Family) => Promise<void>) =>
    Deno.test(`${kind} broker: ${name}`, async () => {
      const f = family();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    });

  test("delivers to its own hub at once, exactly once", async (f) => {
    const broker = await f.make();
    const got: Envelope[] = [];
    await listen(broker, got);
    broker.publish(heartbeat(broker.origin, 1));
    assert.deepEqual(got, [heartbeat(broker.origin, 1)], "synchronously, inside publish()");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(got.length, 1, "its own echo from the transport is dropped");
    await broker.close();
  });

  test("each broker has its own origin tag", async (f) => {
    const [a, b] = [await f.make(), await f.make()];
    assert.notEqual(a.origin, b.origin);
    await a.close();
    await b.close();
  });

  test("other hubs get every event once and in order, or none for the local broker", async (f) => {
    const [a, b] = [await f.make(), await f.make()];
    const atB: Envelope[] = [];
    await listen(a, []);
    await listen(b, atB);
    for (let seq = 1; seq <= 50; seq++) a.publish(heartbeat(a.origin, seq));
    if (a.shared) {
      await until(() => atB.length >= 50, "50 envelopes at the other hub");
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(
        atB.map((e) => (e as { seq: number }).seq),
        [...Array(50).keys()].map((i) => i + 1),
      );
    } else {
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(atB, [], "an in-process broker reaches no one else");
    }
    assert.equal(a.status.up, true);
    await a.close();
    await b.close();
  });

  test("a closed broker delivers nothing more", async (f) => {
    const [a, b] = [await f.make(), await f.make()];
    const atB: Envelope[] = [];
    await listen(a, []);
    await listen(b, atB);
    await b.close();
    a.publish(heartbeat(a.origin, 1));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(atB, []);
    await a.close();
  });

  if (kind === "local") continue;

  test("two hubs share one chat: messages, ids, presence and names", async (f) => {
    const { hubA, hubB, stop } = await twoHubs(f);
    try {
      const alice = new FakeConnection("json");
      const bob = new FakeConnection("text");
      hubA.connect(alice, { name: "alice", room: "r" });
      await until(() => alice.events.some((e) => e.type === "welcome"), "alice's welcome");
      hubB.connect(bob, { name: "bob", room: "r" });
      await until(() => bob.frames.length > 0, "bob's welcome");
      await until(
        () => alice.events.some((e) => e.type === "joined" && e.name === "bob"),
        "alice to hear that bob joined on the other hub",
      );
      hubA.receive(alice, JSON.stringify({ type: "say", text: "hi bob", ref: 7 }));
      hubB.receive(bob, "hi alice");
      await until(() => bob.frames.includes("alice: hi bob"), "bob to get alice's line");
      await until(
        () => alice.events.some((e) => e.type === "message" && e.text === "hi alice"),
        "alice to get bob's line",
      );
      const ids = alice.events.filter((e) => e.type === "message").map((e) => e.id);
      assert.deepEqual(ids.toSorted(), [1, 2], "one id space across hubs");
      assert.ok(alice.events.some((e) => e.ref === 7 && e.type === "message"), "alice's ack");
      // Names are unique across hubs; /who lists both.
      hubB.receive(bob, "/nick alice");
      await until(() => bob.frames.some((l) => l.includes("taken")), "name taken across hubs");
      hubB.receive(bob, "/who");
      await until(() => bob.frames.some((l) => l.startsWith("* 2 in #r")), "who lists both");
      // A third client on hub B gets history written through hub A.
      const carol = new FakeConnection("json");
      hubB.connect(carol, { name: "carol", room: "r" });
      await until(() => carol.events.some((e) => e.type === "welcome"), "carol's welcome");
      const welcome = carol.events.find((e) => e.type === "welcome")!;
      // Both, in id order; which was stored first is a race (they were sent on two hubs at once).
      const history = welcome.history as { text: string; id: number }[];
      assert.deepEqual(history.map((m) => m.text).toSorted(), ["hi alice", "hi bob"]);
      assert.deepEqual(history.map((m) => m.id), [1, 2]);
      hubB.disconnect(bob);
      await until(
        () => alice.events.some((e) => e.type === "left" && e.name === "bob"),
        "alice to hear that bob left",
      );
      // A hub that stops says bye: its members leave the others' view at once.
      hubB.disconnect(carol);
      const dave = new FakeConnection("text");
      hubB.connect(dave, { name: "dave", room: "r" });
      await until(() => alice.events.some((e) => e.name === "dave"), "dave joined");
      hubB.stop();
      await until(
        () => alice.events.some((e) => e.type === "left" && e.name === "dave"),
        "dave leaves alice's room when his hub stops",
      );
    } finally {
      await stop();
    }
  });

  test("one name taken on two hubs at once: one member yields, deterministically", async (f) => {
    const { hubA, hubB, brokerA, brokerB, stop } = await twoHubs(f);
    try {
      const a = new FakeConnection("text");
      const b = new FakeConnection("text");
      // Both connect before either hub hears of the other's member.
      hubA.connect(a, { name: "dup", room: "r" });
      hubB.connect(b, { name: "dup", room: "r" });
      const yielder = brokerA.origin > brokerB.origin ? a : b;
      const keeper = yielder === a ? b : a;
      await until(
        () => yielder.frames.includes("* dup is now dup-2"),
        "the yielding member renamed",
      );
      await until(
        () =>
          keeper.frames.includes("* dup-2 joined") || keeper.frames.includes("* dup is now dup-2"),
        "the keeper told",
      );
      keeper.clear();
      (keeper === a ? hubA : hubB).receive(keeper, "/who");
      await until(() => keeper.frames.length > 0, "who");
      assert.deepEqual(keeper.frames, ["* 2 in #r: dup, dup-2"]);
    } finally {
      await stop();
    }
  });

  test("a hub that goes silent is dropped, with its members, after the time-to-live", async (f) => {
    const [brokerA, brokerB] = [await f.make(), await f.make()];
    const store = await f.store();
    const hubA = new Hub({ broker: brokerA, store, heartbeatMs: 50, peerTtlMs: 300 });
    const got: Envelope[] = [];
    await listen(brokerB, got);
    try {
      // Hub B is played by hand: one member, then silence (a crash: no bye).
      const alice = new FakeConnection("text");
      hubA.connect(alice, { name: "alice", room: "r" });
      brokerB.publish({
        kind: "joined",
        origin: brokerB.origin,
        room: "r",
        seq: 1,
        ts: 1,
        name: "zed",
      });
      brokerB.publish(heartbeat(brokerB.origin, 1));
      await until(() => alice.frames.includes("* zed joined"), "zed to join from the silent hub");
      const joinedAt = Date.now();
      await until(() => alice.frames.includes("* zed left"), "zed to leave after the ttl", 3000);
      assert.ok(Date.now() - joinedAt >= 200, "not before the time-to-live");
      assert.equal(hubA.peers, 0);
    } finally {
      hubA.stop();
      hubA.closeAll(1001, "test over");
      await brokerA.close();
      await brokerB.close();
      await store.close();
    }
  });
}
