/**
 * Two natter processes over a real Redis Cluster (three masters, three replicas) that the test
 * starts itself (tests/redis_cluster.ts): chat, presence, history and recovery in rooms on every
 * shard; one sharded channel per active room; a master killed mid-chat and replaced by its
 * replica, losing no acknowledged message.
 */

import assert from "node:assert/strict";
import { roomKey } from "../lib/store/redis_store.ts";
import { Client, ServerProcess, sleep, until, welcomeOf } from "./helpers.ts";
import { RedisCluster } from "./redis_cluster.ts";
import { haveRedis } from "./redis_server.ts";

const enabled = haveRedis();

/** A cluster, and two instances given different nodes of it; everything stopped afterwards. */
async function withCluster(
  fn: (
    ctx: { redis: RedisCluster; ports: [number, number]; servers: ServerProcess[] },
  ) => Promise<void>,
): Promise<void> {
  const redis = await RedisCluster.start();
  const started: ServerProcess[] = [];
  try {
    for (const url of [redis.urls[0]!, redis.urls[4]!]) {
      started.push(await ServerProcess.start(["--port", "0", "--redis", url]));
    }
    const ports = await Promise.all(started.map((server) => server.port()));
    await fn({ redis, ports: ports as [number, number], servers: started });
  } finally {
    for (const server of started) await server.stop("SIGKILL");
    await redis.stop();
  }
}

/** One room name per master: rooms whose keys live on three different shards. */
async function roomsOnEveryShard(redis: RedisCluster): Promise<Map<number, string>> {
  const rooms = new Map<number, string>();
  for (let i = 0; rooms.size < 3; i++) {
    if (i > 200) throw new Error("no room names found on every shard");
    const room = `room${i}`;
    const { port } = await redis.masterOf(roomKey(room, "seq"));
    if (!rooms.has(port)) rooms.set(port, room);
  }
  return rooms;
}

async function health(port: number): Promise<Record<string, unknown>> {
  return await (await fetch(`http://127.0.0.1:${port}/healthz`)).json();
}

/** Every master's sharded channels of natter's rooms (`PUBSUB SHARDCHANNELS`), sorted. */
async function shardChannels(redis: RedisCluster): Promise<string[]> {
  const found: string[] = [];
  for (const server of await redis.masters()) {
    const reply = await server.command("PUBSUB", "SHARDCHANNELS", "natter:{*}:room");
    found.push(...[...reply.matchAll(/natter:\{(\S+)\}:room\r/g)].map((m) => m[1]!));
  }
  return found.sort();
}

Deno.test({
  name:
    "Redis Cluster: two instances chat, see presence, share history and recover in rooms on every shard; one sharded channel per active room",
  ignore: !enabled,
  async fn() {
    await withCluster(async ({ redis, ports: [pa, pb] }) => {
      const rooms = await roomsOnEveryShard(redis);
      for (const room of rooms.values()) {
        const alice = await Client.json(`ws://127.0.0.1:${pa}/?name=alice&room=${room}`);
        const bob = await Client.json(`ws://127.0.0.1:${pb}/?name=bob&room=${room}`);
        await alice.event("joined", (e) => e.name === "bob", 5000);
        alice.send({ type: "say", text: `hi bob in ${room}`, ref: 1 });
        await bob.event("message", (e) => e.text === `hi bob in ${room}`);
        bob.send({ type: "say", text: `hi alice in ${room}`, ref: 2 });
        await alice.event("message", (e) => e.text === `hi alice in ${room}`);
        bob.send({ type: "who", ref: 3 });
        const who = await bob.event("members", (e) => e.ref === 3);
        assert.deepEqual(
          (who.members as (string | { name: string })[]).map((m) =>
            typeof m === "string" ? m : m.name
          ).toSorted(),
          ["alice", "bob"],
        );

        // History written through both instances, read through the first.
        const carol = await Client.json(`ws://127.0.0.1:${pa}/?name=carol&room=${room}`);
        const welcome = welcomeOf(carol);
        assert.deepEqual(welcome.history.map((m: { text: string }) => m.text), [
          `hi bob in ${room}`,
          `hi alice in ${room}`,
        ]);
        assert.deepEqual(welcome.history.map((m: { id: number }) => m.id), [1, 2]);
        await carol.close();

        // Recovery across instances: alice leaves A, misses two lines, comes back on B.
        const { epoch } = welcomeOf(alice);
        await alice.close();
        await bob.event("left", (e) => e.name === "alice", 5000);
        for (const text of ["one", "two"]) bob.send({ type: "say", text });
        await bob.event("message", (e) => e.text === "two");
        const back = await Client.json(
          `ws://127.0.0.1:${pb}/?name=alice&room=${room}&since=2&epoch=${epoch}`,
        );
        const again = welcomeOf(back);
        assert.equal(again.recovered, true);
        assert.deepEqual(again.history.map((m: { id: number }) => m.id), [3, 4]);
        await back.close();
        // bob stays: every room keeps a member on B, and on A once carol is back.
        await Client.json(`ws://127.0.0.1:${pa}/?name=dave&room=${room}`);
      }
      // One sharded channel per active room, on the room channel's own shard.
      await until(
        async () => (await shardChannels(redis)).join() === [...rooms.values()].sort().join(),
        "one sharded channel per active room",
        10_000,
      );
      for (const port of [pa, pb]) assert.equal((await health(port)).status, "ok");
    });
  },
});

Deno.test({
  name:
    "Redis Cluster: a master killed mid-chat loses no acknowledged message; natter follows the failover and clients recover with since",
  ignore: !enabled,
  async fn() {
    await withCluster(async ({ redis, ports: [pa, pb] }) => {
      const rooms = await roomsOnEveryShard(redis);
      const [victim, room] = [...rooms][0]!;
      const senders: Client[] = [];
      const readers: Client[] = [];
      for (const name of rooms.values()) {
        senders.push(await Client.json(`ws://127.0.0.1:${pa}/?name=s&room=${name}`));
        readers.push(await Client.json(`ws://127.0.0.1:${pb}/?name=r&room=${name}`));
      }
      /** What each room's sender was told of each line: acknowledged (its id) or not. */
      const acked = senders.map(() => new Map<string, number>());
      let refused = 0;
      let sending = true;
      const send = async (i: number) => {
        const sender = senders[i]!;
        for (let n = 0; sending; n++) {
          const text = `line ${n}`;
          // Sent until acknowledged, with one key: a resend after "unknown" shows once.
          for (let attempt = 0; sending; attempt++) {
            const ref = `${n}.${attempt}`;
            sender.send({ type: "say", text, ref, key: `k${n}` });
            const answer = JSON.parse(
              await sender.next((line) => line.includes(`"ref":"${ref}"`), 10_000),
            );
            if (answer.type === "message") {
              acked[i]!.set(text, answer.id);
              break;
            }
            refused++;
            await sleep(100);
          }
          await sleep(10);
        }
      };
      const loops = senders.map((_, i) => send(i));
      await sleep(1000);
      const before = acked.map((m) => m.size);
      await redis.killMaster(victim);
      const killedAt = Date.now();
      const successor = await redis.waitForFailover(victim);
      // natter follows: the killed shard's room takes messages again within seconds.
      const count = acked[0]!.size;
      await until(
        () => acked[0]!.size > count + 5,
        "the killed shard's room to chat again",
        10_000,
      );
      const resumed = Date.now() - killedAt;
      await sleep(500);
      sending = false;
      await Promise.all(loops);
      for (const [i, m] of acked.entries()) {
        assert.ok(
          m.size > before[i]! + 5,
          `room ${i} went on after the kill: ${before[i]} → ${m.size}`,
        );
      }

      // Every acknowledged line is in the shared history with the id it was acknowledged with,
      // read through the other instance, and no line is there twice.
      for (const [i, name] of [...rooms.values()].entries()) {
        const late = await Client.json(
          `ws://127.0.0.1:${pb}/?name=late${i}&room=${name}&history=500`,
        );
        const history = welcomeOf(late).history as { id: number; text: string }[];
        const stored = new Map(history.map((m) => [m.text, m.id]));
        for (const [text, id] of acked[i]!) {
          assert.equal(stored.get(text), id, `room ${name}: acknowledged "${text}" (#${id}) kept`);
        }
        assert.equal(new Set(history.map((m) => m.text)).size, history.length, "no duplicates");
        await late.close();
      }

      // The reader of the killed shard's room (on the other instance) hears it live again: the
      // instance subscribed again on the channel's new shard. Whatever it missed meanwhile, it
      // recovers with `since`; nothing comes twice.
      const reader = readers[0]!;
      const newest = Math.max(...acked[0]!.values());
      await reader.event("message", (e) => e.id === newest, 10_000);
      const live = reader.lines.filter((l) => l.includes('"type":"message"')).map((l) =>
        JSON.parse(l) as { id: number }
      );
      assert.equal(new Set(live.map((m) => m.id)).size, live.length, "no message heard twice");
      const last = Math.max(0, ...live.map((m) => m.id));
      const { epoch } = welcomeOf(reader);
      await reader.close();
      const back = await Client.json(
        `ws://127.0.0.1:${pb}/?name=r2&room=${room}&since=${last}&epoch=${epoch}`,
      );
      const again = welcomeOf(back);
      assert.equal(again.recovered, true, `recovered after the failover: ${JSON.stringify(again)}`);
      const seen = new Set([
        ...live.map((m) => m.id),
        ...again.history.map((m: { id: number }) => m.id),
      ]);
      for (const id of acked[0]!.values()) assert.ok(seen.has(id), `the reader has #${id}`);
      await back.close();

      await until(async () => (await health(pa)).status === "ok", "A healthy again", 10_000);
      await until(async () => (await health(pb)).status === "ok", "B healthy again", 10_000);
      console.log(
        `failover: ${victim} → ${successor}; room ${room} chatting again ${resumed} ms after the kill; ${refused} sends refused or unknown and sent again`,
      );
      for (const client of [...senders, ...readers.slice(1)]) await client.close();
    });
  },
});

Deno.test({
  name:
    "Redis Cluster: a message is acknowledged once a replica has it; with the replica stalled it still is, and natter warns that a failover could lose it",
  ignore: !enabled,
  async fn() {
    await withCluster(async ({ redis, ports: [pa], servers }) => {
      const a = servers[0]!;
      const [master, room] = [...await roomsOnEveryShard(redis)][0]!;
      const alice = await Client.json(`ws://127.0.0.1:${pa}/?name=alice&room=${room}`);
      alice.send({ type: "say", text: "replicated", ref: 1 });
      await alice.event("message", (e) => e.ref === 1, 5000);
      assert.doesNotMatch(a.stderr, /no replica that keeps up/);
      const replica = await redis.replicaOf(master);
      replica.freeze(true);
      try {
        const sent = Date.now();
        alice.send({ type: "say", text: "not replicated", ref: 2 });
        await alice.event("message", (e) => e.ref === 2, 5000);
        const waited = Date.now() - sent;
        assert.ok(waited >= 90, `the acknowledgement waited for the replica (${waited} ms)`);
        await until(() => /no replica that keeps up/.test(a.stderr), "the warning", 3000);
      } finally {
        replica.freeze(false);
      }
      await alice.close();
    });
  },
});

/** Waits until `reader` hears a line `sender` says now, live (within `ms`), in `room`. */
async function heardLive(sender: Client, reader: Client, text: string, ms = 3000) {
  sender.send({ type: "say", text });
  await reader.event("message", (e) => e.text === text, ms);
}

Deno.test({
  name:
    "Redis Cluster: a planned failover of every shard (CLUSTER FAILOVER) keeps rooms heard live across instances and the instances in touch",
  ignore: !enabled,
  async fn() {
    await withCluster(async ({ redis, ports: [pa, pb] }) => {
      const rooms = await roomsOnEveryShard(redis);
      const pairs: [Client, Client][] = [];
      for (const room of rooms.values()) {
        const sender = await Client.json(`ws://127.0.0.1:${pa}/?name=s&room=${room}`);
        const reader = await Client.json(`ws://127.0.0.1:${pb}/?name=r&room=${room}`);
        await heardLive(sender, reader, `before in ${room}`);
        pairs.push([sender, reader]);
      }
      for (const master of rooms.keys()) await redis.switchOver(master);
      // Every room is still heard live on the other instance (not only on the next gap).
      for (const [i, [sender, reader]] of pairs.entries()) {
        await until(
          async () => {
            try {
              await heardLive(sender, reader, `after ${Date.now()} in ${i}`, 1000);
              return true;
            } catch {
              return false;
            }
          },
          `room ${i} heard live after the failovers`,
          8000,
        );
      }
      await until(
        async () => (await shardChannels(redis)).join() === [...rooms.values()].sort().join(),
        "the rooms' channels on their new masters",
        10_000,
      );
      // The instances still hear each other's heartbeats (presence travels on one channel).
      await sleep(8000);
      for (const port of [pa, pb]) {
        const bus = (await health(port)).bus as { peers: number };
        assert.equal(bus.peers, 1, `instance ${port} still hears the other`);
      }
      for (const [sender, reader] of pairs) await Promise.all([sender.close(), reader.close()]);
    });
  },
});

Deno.test({
  name:
    "Redis Cluster: a master that hangs (SIGSTOP) stops only its own rooms, and natter follows the failover while it still hangs",
  ignore: !enabled,
  async fn() {
    await withCluster(async ({ redis, ports: [pa, pb] }) => {
      const rooms = [...await roomsOnEveryShard(redis)];
      const [victim, hung] = rooms[0]!;
      const clients = new Map<string, [Client, Client]>();
      for (const [, room] of rooms) {
        clients.set(room, [
          await Client.json(`ws://127.0.0.1:${pa}/?name=s&room=${room}`),
          await Client.json(`ws://127.0.0.1:${pb}/?name=r&room=${room}`),
        ]);
      }
      await redis.freezeMaster(victim);
      try {
        // While it hangs, before the failover, the other shards' rooms chat as before.
        await sleep(2500);
        for (const [, room] of rooms.slice(1)) {
          const [sender, reader] = clients.get(room)!;
          sender.send({ type: "say", text: `during in ${room}`, ref: room });
          const answer = await sender.next((line) => line.includes(`"ref":"${room}"`), 5000);
          assert.equal(JSON.parse(answer).type, "message", `acknowledged in ${room}: ${answer}`);
          await reader.event("message", (e) => e.text === `during in ${room}`, 3000);
        }
        await redis.waitForFailover(victim);
        // The hung master's room chats again, heard live on the other instance, while it hangs.
        const [sender, reader] = clients.get(hung)!;
        await until(
          async () => {
            const ref = `r${Date.now()}`;
            sender.send({ type: "say", text: ref, ref });
            const answer = JSON.parse(
              await sender.next((line) => line.includes(`"ref":"${ref}"`), 5000),
            );
            if (answer.type !== "message") return false;
            await reader.event("message", (e) => e.text === ref, 3000);
            return true;
          },
          "the hung master's room to chat again",
          15_000,
        );
        for (const port of [pa, pb]) {
          await until(async () => (await health(port)).status === "ok", `${port} healthy`, 10_000);
        }
      } finally {
        redis.thaw(victim);
      }
      for (const [sender, reader] of clients.values()) {
        await Promise.all([sender.close(), reader.close()]);
      }
    });
  },
});
