/**
 * Several natter processes, one chat, through a real Redis that the test starts itself:
 * chat, presence, history and recovery across instances; a crashed instance's members leave
 * within the stated bound; Redis restarted mid-chat and service resumes.
 */

import assert from "node:assert/strict";
import { HEARTBEAT_MS, PEER_TTL_MS } from "../lib/cluster/cluster.ts";
import { Client, MAIN, run, ServerProcess, sleep, welcomeOf } from "./helpers.ts";
import { haveRedis, RedisServer } from "./redis_server.ts";

const enabled = haveRedis();

/** Two instances against one fresh Redis; everything is stopped afterwards. */
async function cluster(
  fn: (ctx: {
    redis: RedisServer;
    a: ServerProcess;
    b: ServerProcess;
    ports: [number, number];
  }) => Promise<void>,
): Promise<void> {
  const redis = await RedisServer.start();
  const started: ServerProcess[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      started.push(await ServerProcess.start(["--port", "0", "--redis", redis.url]));
    }
    const [a, b] = started as [ServerProcess, ServerProcess];
    await fn({ redis, a, b, ports: [await a.port(), await b.port()] });
  } finally {
    for (const server of started) await server.stop("SIGKILL");
    await redis.kill();
  }
}

async function health(port: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { status: response.status, body: await response.json() };
}

function messages(client: Client): { id: number; text: string; from: string }[] {
  return client.lines.filter((l) => l.includes('"type":"message"')).map((l) => JSON.parse(l));
}

Deno.test({
  name: "Redis cluster: chat, presence, shared history and recovery across two instances",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ ports: [pa, pb] }) => {
      // Each instance hears the other before the clients come.
      for (const port of [pa, pb]) {
        const deadline = Date.now() + 5000;
        while (
          (await health(port)).body.bus &&
          ((await health(port)).body.bus as { peers: number }).peers < 1
        ) {
          if (Date.now() > deadline) throw new Error("instances did not find each other");
          await sleep(50);
        }
      }
      const alice = await Client.open(`ws://127.0.0.1:${pa}/?name=alice&room=r`, "natter.v1");
      const bob = await Client.open(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.event("joined", (e) => e.name === "bob");
      alice.socket.send(JSON.stringify({ type: "say", text: "hi bob", ref: 1 }));
      await bob.next((l) => l === "alice: hi bob");
      bob.socket.send("hi alice");
      await alice.event("message", (e) => e.text === "hi alice");
      bob.socket.send("/who");
      await bob.next((l) => l === "* 2 in #r: bob, alice");
      // History written through both instances, read from the second.
      const carol = await Client.open(`ws://127.0.0.1:${pb}/?name=carol&room=r`, "natter.v1");
      const welcome = JSON.parse(carol.lines.find((l) => l.includes('"welcome"'))!);
      assert.deepEqual(welcome.history.map((m: { text: string }) => m.text), [
        "hi bob",
        "hi alice",
      ]);
      assert.deepEqual(welcome.history.map((m: { id: number }) => m.id), [1, 2]);
      await carol.close();

      // Recovery across instances: alice drops from A, misses three lines, comes back on B.
      const last = Math.max(...messages(alice).map((m) => m.id));
      const epoch = welcomeOf(alice).epoch;
      await alice.close();
      for (const text of ["one", "two", "three"]) bob.socket.send(text);
      await sleep(200);
      const back = await Client.open(
        `ws://127.0.0.1:${pb}/?name=alice&room=r&since=${last}&epoch=${epoch}`,
        "natter.v1",
      );
      const again = welcomeOf(back);
      assert.equal(again.recovered, true);
      assert.deepEqual(again.history.map((m: { text: string }) => m.text), ["one", "two", "three"]);
      assert.deepEqual(again.history.map((m: { id: number }) => m.id), [3, 4, 5]);
      bob.socket.send("four");
      const four = await back.event("message", (e) => e.text === "four");
      assert.equal(four.id, 6, "live messages go on where the recovery ended");
      await sleep(150);
      assert.equal(messages(back).filter((m) => m.text === "three").length, 0, "no duplicates");
      await back.close();
      await bob.close();
    });
  },
});

Deno.test({
  name: "Redis cluster: an instance killed with kill -9 leaves presence within the stated bound",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ b, ports: [pa, pb] }) => {
      const alice = await Client.open(`ws://127.0.0.1:${pa}/?name=alice&room=r`);
      const bob = await Client.open(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.next((l) => l === "* bob joined");
      await b.stop("SIGKILL");
      const killedAt = Date.now();
      const bound = PEER_TTL_MS + HEARTBEAT_MS;
      await alice.next((l) => l === "* bob left", bound + 1500);
      const took = Date.now() - killedAt;
      assert.ok(took <= bound + 1000, `bob left after ${took} ms; the bound is ${bound} ms`);
      assert.ok(
        took >= PEER_TTL_MS - HEARTBEAT_MS - 500,
        `not before the time-to-live (${took} ms)`,
      );
      const { body } = await health(pa);
      assert.equal((body.bus as { peers: number }).peers, 0);
      await bob.closed.catch(() => {});
      await alice.close();
    });
  },
});

Deno.test({
  name:
    "Redis cluster: Redis restarted mid-chat; nothing unstored is acknowledged, service resumes",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ redis, ports: [pa, pb] }) => {
      const alice = await Client.open(`ws://127.0.0.1:${pa}/?name=alice&room=r`, "natter.v1");
      const bob = await Client.open(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.event("joined", (e) => e.name === "bob");
      alice.socket.send(JSON.stringify({ type: "say", text: "before", ref: 1 }));
      await bob.next((l) => l === "alice: before");

      await redis.kill();
      let down = await health(pa);
      const deadline = Date.now() + 5000;
      while (down.status === 200 && Date.now() < deadline) {
        await sleep(50);
        down = await health(pa);
      }
      assert.equal(down.status, 503);
      assert.equal(down.body.status, "degraded");
      assert.equal((down.body.bus as { up: boolean }).up, false);
      const metrics = await (await fetch(`http://127.0.0.1:${pa}/metrics`)).text();
      assert.match(metrics, /^natter_bus_up 0$/m);

      // During the outage a message is refused, not acknowledged; the socket stays open.
      alice.socket.send(JSON.stringify({ type: "say", text: "during", ref: 2 }));
      const refused = await alice.event("error", (e) => e.ref === 2);
      assert.equal(refused.code, "unavailable");
      assert.ok(!alice.lines.some((l) => l.includes('"during"') && l.includes('"message"')));

      await redis.restart();
      for (const port of [pa, pb]) {
        const until2 = Date.now() + 10000;
        while ((await health(port)).status !== 200) {
          if (Date.now() > until2) throw new Error(`instance on ${port} did not recover`);
          await sleep(100);
        }
      }
      // Fan-out resumes (this Redis kept nothing: a new epoch, and the page is told).
      await alice.event("welcome", (e) => e.epoch !== welcomeOf(alice).epoch);
      alice.socket.send(JSON.stringify({ type: "say", text: "after", ref: 3 }));
      const ack = await alice.event("message", (e) => e.ref === 3);
      assert.equal(ack.text, "after");
      await bob.next((l) => l === "alice: after", 5000);
      bob.socket.send("back too");
      await alice.event("message", (e) => e.text === "back too");
      assert.ok(!bob.lines.includes("alice: during"), "the refused message never arrived");
      await alice.close();
      await bob.close();
    });
  },
});

Deno.test({
  name:
    "Redis cluster: Redis emptied while it runs (FLUSHALL): the instance that did not notice moves to the new epoch before it delivers the new ids",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ redis, ports: [pa, pb] }) => {
      const watcher = await Client.json(`ws://127.0.0.1:${pa}/?name=watcher&room=r`);
      const poster = await Client.json(`ws://127.0.0.1:${pb}/?name=poster&room=r`);
      await watcher.event("joined", (e) => e.name === "poster");
      const before = welcomeOf(watcher).epoch;
      for (let i = 1; i <= 3; i++) {
        poster.socket.send(JSON.stringify({ type: "say", text: `old ${i}`, ref: i }));
        await watcher.event("message", (e) => e.text === `old ${i}`);
      }
      await redis.command("FLUSHALL");
      // The poster's instance notices on its next append; the watcher's only hears the message.
      poster.socket.send(JSON.stringify({ type: "say", text: "new 1", ref: "n1" }));
      const ack = await poster.event("message", (e) => e.ref === "n1", 10_000);
      // The watcher gets a welcome under the new epoch, with the new message in its history or
      // after it; never the new id as if it followed the old ones.
      const rewelcome = await watcher.event("welcome", (e) => e.epoch !== before, 10_000);
      const inHistory = (rewelcome.history as { id: number; text: string }[])
        .find((m) => m.text === "new 1");
      const seen = inHistory ?? await watcher.event("message", (e) => e.text === "new 1", 10_000);
      assert.equal(seen.id, ack.id);
      const welcomeAt = watcher.lines.findIndex((l) =>
        l.includes('"type":"welcome"') && !l.includes(before)
      );
      const early = watcher.lines.slice(0, welcomeAt).filter((l) => l.includes('"new 1"'));
      assert.deepEqual(early, [], "no new id before the new welcome");
      await Promise.all([watcher.close(), poster.close()]);
    });
  },
});

Deno.test({
  name:
    "Redis cluster: a stalled Redis (longer than the presence time-to-live) is noticed, and all of it comes back",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ redis, ports: [pa, pb] }) => {
      const alice = await Client.open(`ws://127.0.0.1:${pa}/?name=alice&room=r`);
      const bob = await Client.open(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.next((l) => l === "* bob joined");
      redis.freeze(true);
      try {
        const stalledAt = Date.now();
        let health = await fetch(`http://127.0.0.1:${pa}/healthz`);
        while (health.status === 200 && Date.now() - stalledAt < 6000) {
          await health.body?.cancel();
          await sleep(100);
          health = await fetch(`http://127.0.0.1:${pa}/healthz`);
        }
        const body = await health.json();
        assert.equal(body.status, "degraded", "a Redis that does not answer is a bus that is down");
        assert.ok(Date.now() - stalledAt < 5000, "noticed within seconds");
        alice.socket.send("during");
        await alice.next((l) => l.startsWith("! your message was not sent"), 4000);
        // A room first joined now: its welcome cannot read history, and says so.
        const carol = await Client.open(`ws://127.0.0.1:${pb}/?name=carol&room=fresh`, "natter.v1");
        await carol.event("error", (e) => e.code === "unavailable", 5000);
        // The other instance has gone quiet for longer than the time-to-live.
        await alice.next((l) => l === "* bob left", PEER_TTL_MS + HEARTBEAT_MS + 3000);
        redis.freeze(false);
        await alice.next((l) => l === "* bob joined", 10000);
        // The room joined during the stall works now, across instances.
        const dave = await Client.open(`ws://127.0.0.1:${pa}/?name=dave&room=fresh`);
        dave.socket.send("hello fresh");
        const got = await carol.event("message", (e) => e.text === "hello fresh", 5000);
        assert.equal(got.from, "dave");
        carol.socket.send(JSON.stringify({ type: "say", text: "carol here", ref: "c" }));
        assert.equal((await carol.event("message", (e) => e.ref === "c", 5000)).text, "carol here");
        await dave.next((l) => l === "carol: carol here");
        bob.socket.send("back");
        await alice.next((l) => l === "bob: back");
        await Promise.all([carol.close(), dave.close()]);
      } finally {
        redis.freeze(false);
      }
      await Promise.all([alice.close(), bob.close()]);
    });
  },
});

/** Waits until an instance says its shared bus is up. */
async function busUp(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while ((await health(port)).status !== 200) {
    if (Date.now() > deadline) throw new Error(`instance on ${port} did not get its bus back`);
    await sleep(50);
  }
}

Deno.test({
  name:
    "Redis restored from an older snapshot: no id is given out twice; the messages after it are acknowledged and reach everyone",
  ignore: !enabled,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const redis = await RedisServer.start(undefined, dir);
    const started: ServerProcess[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        started.push(await ServerProcess.start(["--port", "0", "--redis", redis.url]));
      }
      const [pa, pb] = (await Promise.all(started.map((s) => s.port()))) as [number, number];
      const alice = await Client.json(`ws://127.0.0.1:${pa}/?name=alice&room=r`);
      const bob = await Client.json(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.event("joined", (e) => e.name === "bob", 5000);
      const say = async (text: string, ref: string) => {
        alice.send({ type: "say", text, ref });
        return await alice.event("message", (e) => e.ref === ref, 10_000);
      };
      for (let i = 1; i <= 3; i++) await say(`m${i}`, `r${i}`);
      assert.match(await redis.command("SAVE"), /^\+OK/);
      for (let i = 4; i <= 6; i++) await say(`m${i}`, `r${i}`);
      await bob.event("message", (e) => e.text === "m6", 5000);
      const oldEpoch = welcomeOf(bob).epoch;

      // Redis comes back from the snapshot taken after m3: its counters say 3.
      await redis.kill();
      await redis.restart();
      await busUp(pa);
      await busUp(pb);
      const seven = await say("m7", "r7");
      const heard = await bob.event("message", (e) => e.text === "m7", 10_000);
      assert.equal(heard.id, seven.id);
      // Everyone moved to a new epoch: a new welcome for the JSON clients.
      const epochs = bob.lines.filter((l) => l.includes('"type":"welcome"'))
        .map((l) => JSON.parse(l).epoch);
      assert.equal(epochs.length, 2, `bob was welcomed again: ${epochs}`);
      assert.notEqual(epochs[1], oldEpoch);
      // A client that saw m6 under the old epoch does not take its position for a new one.
      const back = await Client.json(
        `ws://127.0.0.1:${pb}/?name=carol&room=r&since=6&epoch=${oldEpoch}`,
      );
      const welcome = welcomeOf(back);
      assert.equal(welcome.recovered, false);
      assert.notEqual(welcome.epoch, oldEpoch);
      const ids = welcome.history.map((m: { id: number }) => m.id);
      assert.equal(new Set(ids).size, ids.length, `ids in one epoch are unique: ${ids}`);
      assert.ok(welcome.history.some((m: { text: string }) => m.text === "m7"));
      await Promise.all([alice.close(), bob.close(), back.close()]);
    } finally {
      for (const server of started) await server.stop("SIGKILL");
      await redis.kill();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "Redis stalled mid-send: the author hears 'unknown', never 'not sent' for a message others get; a resend with its key shows once",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ redis, ports: [pa, pb] }) => {
      const alice = await Client.json(`ws://127.0.0.1:${pa}/?name=alice&room=r`);
      const bob = await Client.json(`ws://127.0.0.1:${pb}/?name=bob&room=r`);
      await alice.event("joined", (e) => e.name === "bob", 5000);
      alice.send({ type: "say", text: "before", ref: "b", key: "k-before" });
      await alice.event("message", (e) => e.ref === "b", 5000);
      redis.freeze(true);
      try {
        alice.send({ type: "say", text: "during", ref: "d", key: "k-during" });
        const answer = await alice.next((line) => line.includes('"ref":"d"'), 5000);
        const event = JSON.parse(answer);
        assert.equal(event.type, "unknown", `the author is told it is unknown: ${answer}`);
        assert.equal(event.key, "k-during");
        await sleep(1000);
      } finally {
        redis.freeze(false);
      }
      // Redis ran it after all: everyone gets it, the author with its acknowledgement.
      const got = await bob.event("message", (e) => e.text === "during", 10_000);
      const ack = await alice.event("message", (e) => e.ref === "d", 10_000);
      assert.equal(ack.id, got.id);
      // The author, unsure, sends it again with the same key: acknowledged, not shown twice.
      alice.send({ type: "say", text: "during", ref: "d2", key: "k-during" });
      const again = await alice.event("message", (e) => e.ref === "d2", 5000);
      assert.equal(again.id, got.id, "the resend is the message stored the first time");
      alice.send({ type: "say", text: "after", ref: "a" });
      await bob.event("message", (e) => e.text === "after", 5000);
      const seen = bob.lines.filter((l) => l.includes('"text":"during"'));
      assert.equal(seen.length, 1, `bob got "during" once: ${seen}`);
      assert.ok(
        !alice.lines.some((l) => l.includes('"code":"unavailable"') && l.includes('"ref":"d"')),
        "no 'not sent' for a message that was delivered",
      );
      await Promise.all([alice.close(), bob.close()]);
    });
  },
});

Deno.test({
  name:
    "Redis: an instance subscribes to a room's channel while it has members there, and only then",
  ignore: !enabled,
  async fn() {
    await cluster(async ({ redis, ports: [pa, pb] }) => {
      /** `PUBSUB NUMSUB` of each room's channel: how many instances hear it. */
      const listeners = async (...rooms: string[]) => {
        const reply = await redis.command(
          "PUBSUB",
          "NUMSUB",
          ...rooms.map((r) => `natter:{${r}}:room`),
        );
        const numbers = [...reply.matchAll(/^:(\d+)\r$/gm)].map((m) => Number(m[1]));
        return Object.fromEntries(rooms.map((room, i) => [room, numbers[i]]));
      };
      const channels = async () =>
        [...(await redis.command("PUBSUB", "CHANNELS", "natter:{*}:room")).matchAll(
          /natter:\{(\S+)\}:room\r/g,
        )]
          .map((m) => m[1]).sort();
      const until = async (check: () => Promise<boolean>, what: string) => {
        const deadline = Date.now() + 5000;
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await sleep(30);
        }
      };
      const alphaA = await Client.json(`ws://127.0.0.1:${pa}/?room=alpha&name=a1`);
      const betaB = await Client.json(`ws://127.0.0.1:${pb}/?room=beta&name=b1`);
      await until(async () => (await channels()).join() === "alpha,beta", "one channel per room");
      assert.deepEqual(await listeners("alpha", "beta"), { alpha: 1, beta: 1 });

      // B's member comes to alpha: both instances hear it, and chat crosses.
      const alphaB = await Client.json(`ws://127.0.0.1:${pb}/?room=alpha&name=b2`);
      await until(async () => (await listeners("alpha")).alpha === 2, "two listeners of alpha");
      alphaA.send({ type: "say", text: "to both instances", ref: 1 });
      await alphaB.event("message", (e) => e.text === "to both instances");

      // The last members leave: the channels go.
      await alphaB.close();
      await until(async () => (await listeners("alpha")).alpha === 1, "B stops hearing alpha");
      await alphaA.close();
      await betaB.close();
      await until(async () => (await channels()).length === 0, "no room channels left");
    });
  },
});

Deno.test({
  name: "Redis: a Redis Cluster node whose cluster serves no slots is refused at start, saying so",
  ignore: !enabled,
  async fn() {
    const dir = await Deno.makeTempDir();
    const node = await RedisServer.start(undefined, dir, [
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      `${dir}/nodes.conf`,
    ]);
    try {
      const result = await run(["run", "--allow-net", MAIN, "--port", "0", "--redis", node.url]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /is a Redis Cluster node, and its cluster is not ok/);
    } finally {
      await node.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Redis: a Redis that wants a password natter was not given is refused at start, saying how",
  ignore: !enabled,
  async fn() {
    const redis = await RedisServer.start();
    try {
      await redis.command("CONFIG", "SET", "requirepass", "secret");
      const result = await run(["run", "--allow-net", MAIN, "--port", "0", "--redis", redis.url]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /refused natter: NOAUTH.*redis:\/\/USER:PASSWORD@HOST:PORT/);
      assert.doesNotMatch(result.stderr, /^\s+at /m, "a message, not a stack trace");
    } finally {
      await redis.kill();
    }
  },
});
