/**
 * Welcomes and acknowledgements at their edges: joins that overtake each other while the store is
 * read, a store that changes its epoch, a page back within the grace, messages said before a
 * welcome (found by a review of the twelfth session's changes; each failed on the code before it).
 */
import assert from "node:assert/strict";
import { Hub } from "../lib/chat/hub.ts";
import { MemoryStore } from "../lib/store/memory.ts";
import { FakeConnection, TestStore, until } from "./helpers.ts";

const clock = () => 1_700_000_000_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const say = (text: string, ref?: string) => JSON.stringify({ type: "say", text, ref });
const join = (room: string, ref: string) => JSON.stringify({ type: "join", room, ref });
const byRef = (c: FakeConnection, ref: string) => c.events.filter((e) => e.ref === ref);

Deno.test("welcome: a message said before the first welcome is acknowledged even when its author joins another room (and its own room closes) first", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.receive(alice, say("early", "a"));
  hub.receive(alice, join("s", "j"));
  store.holding = false;
  store.release();
  await until(() => byRef(alice, "j").length > 0, "the welcome to #s");
  await sleep(50);
  assert.equal(byRef(alice, "a").length, 1, "say 'a' answered once");
  hub.stop();
});

Deno.test("welcome: nothing about the room a member left (its own name given back there) comes after the new room's welcome", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob", room: "r" });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "bob", room: "r" }); // bob-2, welcome held
  hub.disconnect(bob); // bob-2 gets "bob" back in #r
  hub.receive(alice, join("s", "j"));
  store.holding = false;
  store.release();
  await until(() => alice.events.some((e) => e.type === "welcome"), "the welcome to #s");
  const events = alice.events;
  const welcome = events.findIndex((e) => e.type === "welcome");
  assert.equal(events[welcome]!.room, "s");
  assert.deepEqual(events.slice(welcome + 1).filter((e) => e.room === "r"), [], "nothing from #r");
  hub.stop();
});

Deno.test("welcome: a join whose welcome is read again (the store's epoch changed) is answered by the new welcome, once", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob", room: "r" });
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "q" });
  store.holding = true;
  hub.receive(alice, join("r", "j"));
  store.stale = true;
  hub.receive(bob, say("x", "b")); // refused: reset, the hub rebases and welcomes again
  await sleep(20);
  store.holding = false;
  store.release();
  await until(() => alice.events.filter((e) => e.type === "welcome").length >= 2, "welcomes");
  await sleep(20);
  const answers = byRef(alice, "j");
  assert.deepEqual(answers.map((e) => e.type), ["welcome"], "join j answered by its welcome");
  hub.stop();
});

Deno.test("welcome: a page back within the grace gets no answer to its old connection's join", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store, graceMs: 1000 });
  store.holding = true;
  const page = new FakeConnection("json");
  hub.connect(page, { name: "alice", room: "r", session: "tab-0000001" });
  hub.receive(page, join("s", "j"));
  hub.disconnect(page, true);
  const again = new FakeConnection("json");
  hub.connect(again, { name: "alice", room: "s", session: "tab-0000001" });
  store.holding = false;
  store.release();
  await until(() => again.events.some((e) => e.type === "welcome"), "the welcome");
  await sleep(20);
  assert.deepEqual(byRef(again, "j"), [], "the new connection never sent join j");
  hub.stop();
});

Deno.test("welcome: a message stored under an old epoch is acknowledged once, and a later message with its id is not taken for it", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const alice = new FakeConnection("json");
  const bob = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.connect(bob, { name: "bob", room: "r" });
  store.stall = true;
  hub.receive(alice, say("old epoch", "a"));
  store.stall = false;
  // The store lost its data meanwhile: a new epoch, ids from 1 again.
  store.inner = new MemoryStore();
  store.epoch = "e2";
  store.answer!();
  await until(() => byRef(alice, "a").some((e) => e.type === "message"), "alice's ack");
  hub.receive(bob, say("bob in the new epoch", "b"));
  await sleep(20);
  assert.equal(byRef(alice, "a").filter((e) => e.type === "message").length, 1, "ack a once");
  assert.equal(
    alice.events.filter((e) => e.type === "message" && e.text === "bob in the new epoch").length,
    1,
    "bob's message once",
  );
  hub.stop();
});

Deno.test("welcome: messages in a welcome's history and a history reply carry no ref", () => {
  const hub = new Hub({ now: clock });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob", room: "r" });
  hub.receive(bob, say("one"));
  hub.receive(bob, say("two"));
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.receive(alice, JSON.stringify({ type: "history", ref: "h" }));
  const welcome = alice.events[0]!;
  const reply = alice.events.find((e) => e.type === "history")!;
  for (const m of [...(welcome.history as object[]), ...(reply.messages as object[])]) {
    assert.ok(!("ref" in m), `no ref in ${JSON.stringify(m)}`);
  }
  hub.stop();
});

const messages = (c: FakeConnection, text: string) =>
  c.events.filter((e) => e.type === "message" && e.text === text);

Deno.test("welcome: a message without a ref said before the first welcome is acknowledged when its author moves on first", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.receive(alice, say("early"));
  hub.receive(alice, join("s", "j"));
  store.holding = false;
  store.release();
  await until(() => alice.events.some((e) => e.ref === "j"), "the welcome to #s");
  await sleep(50);
  assert.equal(messages(alice, "early").length, 1, "its acknowledgement, once");
  hub.stop();
});

Deno.test("welcome: a message the store keeps after its author moved on and its room closed is acknowledged", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  store.stall = true; // the hub hears "unknown", then the store answers
  hub.receive(alice, say("slow", "a"));
  store.stall = false;
  hub.receive(alice, join("s", "j"));
  await until(() => alice.events.some((e) => e.ref === "j"), "the welcome to #s");
  store.answer!();
  await sleep(50);
  assert.equal(byRef(alice, "a").filter((e) => e.type === "message").length, 1, "ack a once");
  hub.stop();
});

Deno.test("welcome: answers without a ref, sent to a member while a welcome is read, outlive its next welcome", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob", room: "s" });
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "q" });
  store.holding = true;
  hub.receive(alice, join("s", "j"));
  hub.receive(alice, say("x")); // stored and delivered in #s at once
  hub.receive(alice, JSON.stringify({ type: "nick", name: "alicia" }));
  hub.receive(alice, join("t", "k"));
  store.holding = false;
  store.release();
  await until(() => alice.events.some((e) => e.ref === "k"), "the welcome to #t");
  await sleep(50);
  assert.equal(messages(bob, "x").length, 1, "bob got x");
  assert.equal(messages(alice, "x").length, 1, "alice's acknowledgement of x");
  assert.equal(alice.events.filter((e) => e.type === "renamed" && e.to === "alicia").length, 1);
  hub.stop();
});

Deno.test("welcome: a message of the old epoch still waiting when the store loses its data gets 'unknown', and no later message takes its ref", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.receive(alice, say("old", "a")); // id 1 under e1, held: the room's position is unknown
  store.holding = false;
  store.inner = new MemoryStore(); // the store loses its data: a new epoch, ids from 1 again
  store.epoch = "e2";
  await hub.publish("r", "backend", "new one"); // id 1 under e2
  store.release();
  await sleep(50);
  assert.deepEqual(byRef(alice, "a").map((e) => e.type), ["unknown"], "one answer to a");
  hub.stop();
});

Deno.test("welcome: a resend with the same key while the first copy still waits for its place answers both refs", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  store.holding = true; // alice is alone: the room's place in the store is being read
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  const keyed = (ref: string) => JSON.stringify({ type: "say", text: "once", key: "k-1", ref });
  hub.receive(alice, keyed("a")); // stored; its author's welcome is still being read
  hub.receive(alice, keyed("b")); // the same key again: the same message
  store.holding = false;
  store.release();
  await until(() => byRef(alice, "b").length > 0, "the answer to b");
  await sleep(50);
  assert.deepEqual(byRef(alice, "a").map((e) => e.type), ["message"], "a answered once");
  assert.deepEqual(byRef(alice, "b").map((e) => e.type), ["message"], "b answered once");
  hub.stop();
});

Deno.test("welcome: a moderator's action in the room while a member's welcome is read reaches it, even when the welcome is read again", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const mod = new FakeConnection("json");
  const identity = {
    sub: "u-mod",
    name: "mod",
    role: "moderator" as const,
    rooms: undefined,
    nick: false,
    exp: 2_000_000_000,
  };
  hub.connect(mod, { name: "mod", room: "r", identity });
  const carol = new FakeConnection("json");
  hub.connect(carol, { name: "carol", room: "r" });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" }); // its welcome is being read
  hub.receive(mod, JSON.stringify({ type: "mute", name: "carol", ref: "m" }));
  store.stale = true;
  hub.receive(mod, say("x", "c")); // refused: reset, the hub rebases and welcomes everyone again
  await sleep(20);
  store.holding = false;
  store.release();
  await until(() => alice.events.some((e) => e.type === "welcome"), "alice's welcome");
  await sleep(50);
  const events = alice.events;
  assert.equal(mod.events.filter((e) => e.type === "welcome").length, 2, "read again");
  const again = events.findLastIndex((e) => e.type === "welcome");
  assert.deepEqual(
    events.slice(again + 1).filter((e) => e.type === "moderated").map((e) => e.action),
    ["mute"],
    "alice learns of the mute",
  );
  hub.stop();
});

Deno.test("send contract: a resend of a key whose first copy the store left unsure, refused by the store, is unsure too and acknowledged when the first is kept", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const alice = new FakeConnection("json");
  const bob = new FakeConnection("json");
  hub.connect(alice, { name: "alice", room: "r" });
  hub.connect(bob, { name: "bob", room: "r" });
  const keyed = (ref: string) => JSON.stringify({ type: "say", text: "hi", ref, key: "k1" });
  store.stall = true; // the store does not answer in time: "unknown"
  hub.receive(alice, keyed("a"));
  store.stall = false;
  store.failAppend = true; // and then cannot be reached at all
  hub.receive(alice, keyed("b"));
  await until(() => byRef(alice, "b").length > 0, "an answer to the resend");
  // Not "not sent": the message under that key may be kept, and is.
  assert.deepEqual(byRef(alice, "b").map((e) => e.type), ["unknown"]);
  store.failAppend = false;
  store.answer!();
  await until(
    () => ["a", "b"].every((ref) => byRef(alice, ref).some((e) => e.type === "message")),
    "both refs acknowledged",
  );
  await sleep(20);
  assert.equal(bob.events.filter((e) => e.type === "message" && e.text === "hi").length, 1);
  assert.deepEqual(byRef(alice, "b").map((e) => e.type), ["unknown", "message"]);
  hub.stop();
});
