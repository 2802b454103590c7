/**
 * Moderation, topics and private messages (issue 17): roles from signed tokens, kick, mute,
 * ban (by name and by address), topics in welcomes, `/msg` to one person only; rulings kept
 * across a restart with `--data`, and everything across two instances through a real Redis.
 */

import assert from "node:assert/strict";
import {
  Client,
  MAIN,
  rawExchange,
  ServerProcess,
  signedToken,
  sleep,
  startServer,
  TEST_JWT_SECRET,
  upgradeRequest,
} from "./helpers.ts";
import { haveRedis, RedisServer } from "./redis_server.ts";

const SECRET = TEST_JWT_SECRET;

function token(name: string, role?: "moderator" | "admin"): Promise<string> {
  return signedToken({ sub: `u-${name}`, name, ...(role ? { role } : {}) });
}

const OPTIONS = { jwtSecret: SECRET, guests: true };

Deno.test("a moderator removes someone (4004, the room is told why); others may not, and an absent name is an error", async () => {
  const server = startServer(OPTIONS);
  try {
    const mod = await Client.open(server.ws(`/?token=${await token("alice", "moderator")}`));
    const bob = await Client.open(server.ws("/?name=bob"));
    const carol = await Client.open(server.ws(`/?token=${await token("carol")}`));
    carol.send("/kick ~bob");
    assert.match(await carol.next((l) => l.startsWith("!")), /only moderators may kick/);
    bob.send("/kick alice");
    assert.match(await bob.next((l) => l.startsWith("!")), /only moderators may kick/);
    mod.send("/kick nobody");
    assert.match(await mod.next((l) => l.startsWith("!")), /no one named "nobody" in #lobby/);
    mod.send("/kick ~bob spamming links");
    assert.equal(
      await carol.next((l) => l.includes("removed")),
      "* alice removed ~bob: spamming links",
    );
    const closed = await bob.closed;
    assert.equal(closed.code, 4004);
    assert.match(closed.reason, /removed by alice: spamming links/);
    await mod.close();
    await carol.close();
  } finally {
    await server.close();
  }
});

Deno.test("a mute silences someone (say, /me, /msg, /nick) until it ends or is lifted", async () => {
  const server = startServer(OPTIONS);
  try {
    const mod = await Client.json(server.ws(`/?token=${await token("alice", "moderator")}`));
    const bob = await Client.open(server.ws("/?name=bob"));
    mod.send({ type: "mute", name: "~bob", duration: "10m", reason: "cool down", ref: 1 });
    const done = await mod.event("moderated", (e) => e.ref === 1);
    assert.equal(done.action, "mute");
    assert.equal(done.name, "~bob");
    assert.ok(Number(done.until) - Number(done.ts) === 600_000);
    assert.match(
      await bob.next((l) => l.includes("muted")),
      /\* alice muted ~bob for 10m: cool down/,
    );
    for (const line of ["hello?", "/me waves", "/msg alice let me talk", "/nick robert"]) {
      bob.send(line);
      assert.match(
        await bob.next((l) => l.startsWith("!")),
        /you are muted in #lobby until \d{4}-\d\d-\d\d \d\d:\d\d UTC/,
        line,
      );
    }
    assert.deepEqual(
      (await mod.unread()).filter((l) => l.includes("hello?") || l.includes("waves")),
      [],
    );
    mod.send({ type: "unmute", name: "~bob", ref: 2 });
    await mod.event("moderated", (e) => e.ref === 2 && e.action === "unmute");
    bob.send("thanks");
    await mod.event("message", (e) => e.text === "thanks");
    mod.send({ type: "unmute", name: "~bob", ref: 3 });
    assert.equal((await mod.event("error", (e) => e.ref === 3)).code, "not_found");
    await mod.close();
    await bob.close();
  } finally {
    await server.close();
  }
});

Deno.test("/msg reaches one person only, and its sender; an absent name is an error", async () => {
  const server = startServer(OPTIONS);
  try {
    const alice = await Client.json(server.ws(`/?token=${await token("alice")}`));
    const bob = await Client.open(server.ws("/?name=bob"));
    const carol = await Client.open(server.ws("/?name=carol"));
    alice.send({ type: "msg", to: "~bob", text: "psst", ref: "p" });
    const echo = await alice.event("private", (e) => e.ref === "p");
    assert.deepEqual([echo.from, echo.to, echo.text], ["alice", "~bob", "psst"]);
    assert.equal(await bob.next((l) => l.includes("psst")), "[private] alice -> ~bob: psst");
    assert.deepEqual((await carol.unread(300)).filter((l) => l.includes("psst")), []);
    carol.send("/msg dave hello");
    assert.match(await carol.next((l) => l.startsWith("!")), /no one named "dave" in #lobby/);
    await Promise.all([alice, bob, carol].map((c) => c.close()));
  } finally {
    await server.close();
  }
});

Deno.test("a topic is set by moderators, told to the room, and carried by every welcome", async () => {
  const server = startServer(OPTIONS);
  try {
    const mod = await Client.open(server.ws(`/?token=${await token("alice", "moderator")}`));
    const bob = await Client.open(server.ws("/?name=bob"));
    bob.send("/topic mine now");
    assert.match(await bob.next((l) => l.startsWith("!")), /only moderators may set the topic/);
    mod.send("/topic Release day: be kind");
    assert.equal(
      await bob.next((l) => l.includes("topic")),
      "* alice set the topic of #lobby: Release day: be kind",
    );
    const late = await Client.json(server.ws("/?name=late"));
    assert.equal(JSON.parse(late.lines[0]!).topic, "Release day: be kind");
    const text = await Client.open(server.ws("/?name=text"));
    assert.equal(text.lines[1], "* topic: Release day: be kind");
    text.send("/topic");
    assert.equal(
      await text.next((l) => l.includes("topic of")),
      "* topic of #lobby: Release day: be kind",
    );
    mod.send("/topic -");
    assert.equal(
      await text.next((l) => l.includes("cleared")),
      "* alice cleared the topic of #lobby",
    );
    await Promise.all([mod, bob, late, text].map((c) => c.close()));
  } finally {
    await server.close();
  }
});

Deno.test("an admin bans by name (the member leaves and cannot come back) and by address (403 before the upgrade)", async () => {
  const server = startServer(OPTIONS);
  try {
    const admin = await Client.open(server.ws(`/?token=${await token("root", "admin")}`));
    const mod = await Client.open(server.ws(`/?token=${await token("alice", "moderator")}`));
    const bob = await Client.open(server.ws("/?name=bob"));
    mod.send("/ban ~bob");
    assert.match(await mod.next((l) => l.startsWith("!")), /only admins may ban/);
    admin.send("/ban ~bob 1d flooding");
    assert.equal(
      await mod.next((l) => l.includes("banned")),
      "* root banned ~bob for 1d: flooding",
    );
    assert.equal((await bob.closed).code, 4004);
    const again = await Client.open(server.ws("/?name=bob"), undefined, { welcomed: false });
    const closed = await again.closed;
    assert.equal(closed.code, 4004);
    assert.match(closed.reason, /you are banned/);
    admin.send("/unban ~bob");
    await admin.next((l) => l.includes("unbanned ~bob"));
    const back = await Client.open(server.ws("/?name=bob"));
    await back.close();
    admin.send("/mute root");
    assert.match(await admin.next((l) => l.startsWith("!")), /cannot mute yourself/);
    mod.send("/mute ~x 0m");
    assert.match(await mod.next((l) => l.startsWith("!")), /"0m" is not a duration/);
    admin.send("/ban 127.0.0.1 10m");
    await admin.next((l) => l.includes("banned 127.0.0.1"));
    // Everyone here connects from 127.0.0.1: the ban closes them all, the admin too.
    assert.equal((await admin.closed).code, 4004);
    const refused = await rawExchange(server.port, upgradeRequest("/?name=x"));
    assert.match(refused, /^HTTP\/1.1 403/);
  } finally {
    await server.close();
  }
});

Deno.test("a moderator deletes a message: everyone is told, and history and recovery give its tombstone", async () => {
  const server = startServer(OPTIONS);
  try {
    const mod = await Client.json(server.ws(`/?token=${await token("alice", "moderator")}`));
    const bob = await Client.json(server.ws("/?name=bob"));
    bob.send({ type: "say", text: "first", ref: 1 });
    bob.send({ type: "say", text: "something awful", ref: 2 });
    bob.send({ type: "say", text: "third", ref: 3 });
    const awful = await bob.event("message", (e) => e.ref === 2);
    await bob.event("message", (e) => e.ref === 3);
    bob.send({ type: "delete", id: awful.id, ref: 4 });
    assert.equal((await bob.event("error", (e) => e.ref === 4)).code, "forbidden");
    mod.send({ type: "delete", id: 999, ref: 5 });
    assert.equal((await mod.event("error", (e) => e.ref === 5)).code, "not_found");
    mod.send({ type: "delete", id: awful.id, ref: 6 });
    const told = await bob.event("deleted");
    assert.deepEqual([told.id, told.by], [awful.id, "alice"]);
    await mod.event("deleted", (e) => e.ref === 6);
    // History, a fresh welcome, and recovery from before it: a tombstone, never the text.
    bob.send({ type: "history", ref: 7 });
    const page = await bob.event("history", (e) => e.ref === 7);
    const texts = (page.messages as { text: string; deleted?: boolean }[]).map((m) =>
      m.deleted ? "(deleted)" : m.text
    );
    assert.deepEqual(texts, ["first", "(deleted)", "third"]);
    const late = await Client.json(server.ws(`/?name=late&since=${Number(awful.id) - 1}`));
    const welcome = JSON.parse(late.lines[0]!);
    assert.ok(!late.lines[0]!.includes("something awful"));
    assert.equal(welcome.history.find((m: { id: number }) => m.id === awful.id).deleted, true);
    const text = await Client.open(server.ws("/?name=reader"));
    text.send("/history");
    await text.next((l) => /\* message \d+ by ~bob was deleted$/.test(l));
    await Promise.all([mod, bob, late, text].map((c) => c.close()));
  } finally {
    await server.close();
  }
});

Deno.test("mutes, bans and topics outlive a restart with --data", async () => {
  const dir = await Deno.makeTempDir();
  const data = `${dir}/natter.db`;
  const args = ["--port", "0", "--data", data, "--jwt-secret", SECRET, "--guests", "yes"];
  const perms = ["--allow-net", `--allow-read=${dir}`, `--allow-write=${dir}`];
  try {
    const first = await ServerProcess.start(args, MAIN, perms);
    const port = await first.port();
    const mod = await Client.open(`ws://127.0.0.1:${port}/?token=${await token("alice", "admin")}`);
    mod.send("/topic kept across restarts");
    await mod.next((l) => l.includes("set the topic"));
    const early = await Client.open(`ws://127.0.0.1:${port}/?name=bob`);
    mod.send("/mute ~bob");
    await mod.next((l) => l.includes("muted ~bob"));
    await early.close();
    mod.send("/ban ~eve");
    await mod.next((l) => l.includes("banned ~eve"));
    mod.send("a secret that must go");
    mod.send("/delete 1");
    await mod.next((l) => l.includes("deleted message 1"));
    await mod.close();
    await first.stop();
    const second = await ServerProcess.start(args, MAIN, perms);
    const port2 = await second.port();
    try {
      await sleep(200); // the rulings are read as the hub starts
      const bob = await Client.json(`ws://127.0.0.1:${port2}/?name=bob`);
      const welcome = JSON.parse(bob.lines[0]!);
      assert.equal(welcome.topic, "kept across restarts");
      assert.deepEqual(welcome.history.map((m: { deleted?: boolean }) => m.deleted), [true]);
      const file = new TextDecoder().decode(await Deno.readFile(data));
      assert.ok(!file.includes("a secret that must go"), "the deleted text left the file");
      bob.send({ type: "say", text: "am I heard?", ref: 1 });
      assert.equal((await bob.event("error", (e) => e.ref === 1)).code, "muted");
      const eve = await Client.open(`ws://127.0.0.1:${port2}/?name=eve`, undefined, {
        welcomed: false,
      });
      assert.equal((await eve.closed).code, 4004);
      await bob.close();
    } finally {
      await second.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "across two instances through Redis: kick, mute, topic, ban and /msg reach members of the other",
  ignore: !haveRedis(),
  async fn() {
    const redis = await RedisServer.start();
    const args = [
      "--port",
      "0",
      "--redis",
      redis.url,
      "--jwt-secret",
      SECRET,
      "--guests",
      "yes",
      "--api-key",
      "api-key-0123456789abcdef",
    ];
    const a = await ServerProcess.start(args);
    const b = await ServerProcess.start(args);
    try {
      const [pa, pb] = [await a.port(), await b.port()];
      const mod = await Client.open(`ws://127.0.0.1:${pa}/?token=${await token("alice", "admin")}`);
      const bob = await Client.json(`ws://127.0.0.1:${pb}/?name=bob`);
      const carol = await Client.open(`ws://127.0.0.1:${pb}/?name=carol`);
      await mod.next((l) => l.includes("~carol joined"), 5000);
      mod.send("/msg ~bob over there");
      const got = await bob.event("private");
      assert.deepEqual([got.from, got.text], ["alice", "over there"]);
      assert.deepEqual((await carol.unread(300)).filter((l) => l.includes("over there")), []);
      mod.send("/mute ~bob");
      await bob.event("moderated", (e) => e.action === "mute");
      bob.send({ type: "say", text: "from b", ref: 1 });
      assert.equal((await bob.event("error", (e) => e.ref === 1)).code, "muted");
      mod.send("said on A, deleted from A");
      const said = await bob.event("message", (e) => e.text === "said on A, deleted from A");
      mod.send(`/delete ${said.id}`);
      assert.equal((await bob.event("deleted")).id, said.id);
      const page = await Client.json(`ws://127.0.0.1:${pb}/?name=pager`);
      const kept = JSON.parse(page.lines[0]!).history as {
        id: number;
        deleted?: boolean;
        text: string;
      }[];
      assert.deepEqual(kept.map((m) => [m.id, m.deleted, m.text]), [[said.id, true, ""]]);
      await page.close();
      mod.send("/topic shared topic");
      await carol.next((l) => l.includes("set the topic of #lobby: shared topic"));
      mod.send("/kick ~carol");
      assert.equal((await carol.closed).code, 4004);
      mod.send("/ban ~bob");
      assert.equal((await bob.closed).code, 4004);
      // A later member of instance B sees the topic; the banned name stays out there too.
      const dave = await Client.json(`ws://127.0.0.1:${pb}/?name=dave`);
      assert.equal(JSON.parse(dave.lines[0]!).topic, "shared topic");
      const bobAgain = await Client.open(`ws://127.0.0.1:${pb}/?name=bob`, undefined, {
        welcomed: false,
      });
      assert.equal((await bobAgain.closed).code, 4004);
      // The server API of instance A removes a member of instance B.
      const answer = await fetch(`http://127.0.0.1:${pa}/api/disconnect`, {
        method: "POST",
        headers: { authorization: "Bearer api-key-0123456789abcdef" },
        body: JSON.stringify({ name: "~dave" }),
      });
      assert.equal(answer.status, 200);
      await answer.body?.cancel();
      assert.equal((await dave.closed).code, 4004);
      await mod.close();
    } finally {
      await a.stop();
      await b.stop();
      await redis.kill();
    }
  },
});

Deno.test("what a review found: a long close reason, a reload past a ban, a session that is not a credential, a name taken back, a banned name by /nick, an address kept from the room", async () => {
  const server = startServer(OPTIONS);
  const verified = (name: string, extra: Record<string, unknown> = {}) =>
    signedToken({ sub: `u-${name}`, name, ...extra }, { ttl: 600 });
  try {
    // A reason over 123 bytes of UTF-8 (a Cyrillic moderator's name): the kick still closes.
    const mod = await Client.open(
      server.ws(`/?token=${await verified("модератор", { role: "admin" })}`),
    );
    const eve = await Client.open(server.ws("/?name=eve"));
    mod.send(`/kick ~eve ${"пожалуйста ".repeat(12)}`);
    assert.equal((await eve.closed).code, 4004);

    // A page in its reload grace does not come back past a ban.
    const carol = await Client.json(server.ws("/?name=carol&session=carol-tab-0001"));
    carol.socket.close(4000, "reload"); // no goodbye: it lingers
    await carol.closed;
    mod.send("/ban ~carol");
    await mod.next((l) => l.includes("banned ~carol"));
    const resumed = await Client.open(
      server.ws("/?name=carol&session=carol-tab-0001"),
      "natter.v1",
      { welcomed: false },
    );
    assert.equal((await resumed.closed).code, 4004);

    // A session is not a credential: without alice's token, her lingering tab is not yours.
    const alice = await Client.json(
      server.ws(`/?token=${await verified("alice")}&session=tab-secret-123`),
    );
    alice.socket.close(4000, "reload");
    await alice.closed;
    const thief = await Client.json(server.ws("/?session=tab-secret-123"));
    assert.match(JSON.parse(thief.lines[0]!).name, /^~/);
    await thief.close();

    // A `nick`-allowed user who took a verified user's name gives it back when that user comes.
    const dave = await Client.json(
      server.ws(`/?room=n&token=${await verified("dave", { nick: true })}`),
    );
    dave.send({ type: "nick", name: "bob", ref: 1 });
    await dave.event("renamed", (e) => e.ref === 1);
    const bob = await Client.json(server.ws(`/?room=n&token=${await verified("bob")}`));
    assert.equal(JSON.parse(bob.lines[0]!).name, "bob");
    await dave.event("renamed", (e) => e.from === "bob" && e.to === "bob-2");

    // A banned name cannot be taken by /nick either.
    mod.send("/ban ~mallory");
    await mod.next((l) => l.includes("banned ~mallory"));
    const other = await Client.open(server.ws("/?name=mallory2"));
    other.send("/nick mallory");
    assert.match(await other.next((l) => l.startsWith("!")), /the name "~mallory" is banned/);
    await Promise.all([dave, bob].map((c) => c.close()));

    // A ban by address: its maker sees the address; the room sees names, never the address.
    mod.send("/ban 127.0.0.1 10m");
    assert.match(await mod.next((l) => l.includes("banned 127.0.0.1")), /for 10m/);
    await other.closed;
    assert.ok(other.lines.some((l) => /banned ~mallory2/.test(l)), JSON.stringify(other.lines));
    assert.ok(!other.lines.some((l) => l.includes("127.0.0.1")), JSON.stringify(other.lines));
    await mod.closed;
  } finally {
    await server.close();
  }
});
