import assert from "node:assert/strict";
import {
  type Draft,
  type HistoryStore,
  type Stored,
  StoreReset,
  Unconfirmed,
} from "../lib/store/history.ts";
import { Hub } from "../lib/chat/hub.ts";
import { presenceInterval } from "../lib/chat/presence.ts";
import { MemoryStore } from "../lib/store/memory.ts";
import { FakeConnection, TestStore, until } from "./helpers.ts";

const clock = () => 1_700_000_000_000;

function setup() {
  return new Hub({ now: clock, server: "natter/test" });
}

Deno.test("Hub.connect() welcomes the newcomer and tells only the others", () => {
  const hub = setup();
  const alice = new FakeConnection();
  const bob = new FakeConnection();
  hub.connect(alice, { port: 1111 });
  hub.connect(bob, { port: 2222 });
  assert.deepEqual(alice.frames, [
    "* you are guest-1111 in #lobby; nobody else is here yet. Type /help for commands.",
    "* guest-2222 joined",
  ]);
  assert.deepEqual(bob.frames, [
    "* you are guest-2222 in #lobby; also here: guest-1111. Type /help for commands.",
  ]);
  assert.equal(hub.connections, 2);
});

Deno.test("Hub: a plain-text sender does not get its own line back", () => {
  const hub = setup();
  const alice = new FakeConnection();
  const bob = new FakeConnection();
  hub.connect(alice, { name: "alice" });
  hub.connect(bob, { name: "bob" });
  alice.clear();
  bob.clear();
  hub.receive(bob, "Your message here..");
  assert.deepEqual(alice.frames, ["bob: Your message here.."]);
  assert.deepEqual(bob.frames, []);
});

Deno.test("Hub: a JSON author gets its message back with its ref; other JSON members get it once without", () => {
  const hub = setup();
  const author = new FakeConnection("json");
  const other = new FakeConnection("json");
  const text = new FakeConnection("text");
  hub.connect(author, { name: "alice" });
  hub.connect(other, { name: "bob" });
  hub.connect(text, { name: "carol" });
  author.clear();
  other.clear();
  text.clear();
  hub.receive(author, JSON.stringify({ type: "say", text: "hi", ref: "r1" }));
  const expected = {
    type: "message",
    room: "lobby",
    id: 1,
    ts: clock(),
    from: "alice",
    text: "hi",
  };
  assert.deepEqual(author.events, [{ ...expected, ref: "r1" }]);
  assert.deepEqual(other.events, [expected]);
  assert.deepEqual(text.frames, ["alice: hi"]);
});

Deno.test("Hub: message ids increase", () => {
  const hub = setup();
  const a = new FakeConnection("json");
  hub.connect(a, { name: "a" });
  a.clear();
  for (const text of ["one", "two", "three"]) hub.receive(a, JSON.stringify({ type: "say", text }));
  assert.deepEqual(a.events.map((event) => event.id), [1, 2, 3]);
});

Deno.test("Hub: rooms are isolated", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection();
  const c = new FakeConnection();
  hub.connect(a, { name: "a", room: "dev" });
  hub.connect(b, { name: "b", room: "dev" });
  hub.connect(c, { name: "c", room: "ops" });
  assert.deepEqual(c.frames.length, 1, "c saw nobody join #ops");
  c.clear();
  hub.receive(a, "in dev");
  hub.receive(a, "/nick anna");
  hub.disconnect(b);
  assert.deepEqual(c.frames, []);
  assert.equal(hub.rooms, 2);
});

Deno.test("Hub: /join moves a member, telling both rooms", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection();
  const c = new FakeConnection("json");
  hub.connect(a, { name: "a" });
  hub.connect(b, { name: "b" });
  hub.connect(c, { name: "c", room: "dev" });
  b.clear();
  c.clear();
  hub.receive(a, "/join #Dev");
  assert.deepEqual(b.frames, ["* a left"]);
  assert.deepEqual(c.events, [{ type: "joined", room: "dev", name: "a", ts: clock() }]);
  assert.equal(a.frames.at(-1), "* you are a in #dev; also here: c. Type /help for commands.");
  hub.receive(a, "hello dev");
  assert.equal(b.frames.length, 1, "the old room hears nothing more");
  assert.equal(JSON.parse(c.frames.at(-1)!).text, "hello dev");
});

Deno.test("Hub: the last member leaving deletes the room", () => {
  const hub = setup();
  const a = new FakeConnection();
  hub.connect(a, { room: "tmp" });
  assert.equal(hub.rooms, 1);
  hub.disconnect(a);
  assert.equal(hub.rooms, 0);
  assert.equal(hub.connections, 0);
  hub.disconnect(a); // a second close is harmless
});

Deno.test("Hub: default names come from the port and are made unique in the room", () => {
  const hub = setup();
  const a = new FakeConnection("json");
  const b = new FakeConnection("json");
  const c = new FakeConnection("json");
  hub.connect(a, { port: 5000 });
  hub.connect(b, { port: 5000 });
  hub.connect(c, { name: "GUEST-5000" });
  assert.equal(a.events[0]?.name, "guest-5000");
  assert.equal(b.events[0]?.name, "guest-5000-2");
  assert.equal(c.events[0]?.name, "GUEST-5000-3");
});

Deno.test("Hub: a long taken name is shortened to fit its suffix", () => {
  const hub = setup();
  const long = "x".repeat(24);
  const a = new FakeConnection("json");
  const b = new FakeConnection("json");
  hub.connect(a, { name: long });
  hub.connect(b, { name: long });
  assert.equal(b.events[0]?.name, "x".repeat(22) + "-2");
});

Deno.test("Hub: a bad requested name or room gets an error, a default, and the connection stays", () => {
  const hub = setup();
  const a = new FakeConnection("json");
  hub.connect(a, { name: "<img src=x>", room: "no spaces here", port: 7 });
  const [welcome, ...errors] = a.events;
  assert.equal(welcome?.name, "guest-7");
  assert.equal(welcome?.room, "lobby");
  assert.deepEqual(errors.map((e) => e.code).sort(), ["bad_name", "bad_room"]);
  assert.equal(a.open, true);
});

Deno.test("Hub: /nick renames, tells the room, and refuses a taken name", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection("json");
  hub.connect(a, { name: "bob" });
  hub.connect(b, { name: "alice" });
  a.clear();
  b.clear();
  hub.receive(a, "/nick robert");
  assert.deepEqual(a.frames, ["* bob is now robert"]);
  assert.deepEqual(b.events, [{
    type: "renamed",
    room: "lobby",
    from: "bob",
    to: "robert",
    ts: clock(),
  }]);
  hub.receive(b, JSON.stringify({ type: "nick", name: "ROBERT", ref: 9 }));
  assert.deepEqual(b.events.at(-1), {
    type: "error",
    code: "name_taken",
    message: 'name "ROBERT" is taken in #lobby',
    ref: 9,
  });
  hub.receive(b, JSON.stringify({ type: "who", ref: "w" }));
  assert.deepEqual(b.events.at(-1), {
    type: "members",
    room: "lobby",
    members: ["robert", "alice"],
    ref: "w",
  });
});

Deno.test("Hub: changing the case of one's own name is allowed", () => {
  const hub = setup();
  const a = new FakeConnection();
  hub.connect(a, { name: "bob" });
  hub.receive(a, "/nick Bob");
  assert.equal(a.frames.at(-1), "* bob is now Bob");
});

Deno.test("Hub: /me is an action, shown with ~ to text clients and flagged for JSON ones", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection();
  const c = new FakeConnection("json");
  hub.connect(a, { name: "alice" });
  hub.connect(b, { name: "bob" });
  hub.connect(c, { name: "carol" });
  hub.receive(a, "/me joined");
  assert.equal(b.frames.at(-1), "~ alice joined", "an action cannot pass for a server notice");
  assert.equal(c.events.at(-1)?.action, true);
});

Deno.test("Hub: bad frames get an error event and the connection stays open", () => {
  const hub = setup();
  const a = new FakeConnection("json");
  const b = new FakeConnection("json");
  hub.connect(a, { name: "a" });
  hub.connect(b, { name: "b" });
  a.clear();
  b.clear();
  for (
    const frame of ["{", "[]", '{"type":"dance"}', '{"type":"say"}', '{"type":"say","text":""}']
  ) {
    hub.receive(a, frame);
  }
  hub.reject(a, { code: "binary", message: "binary frames are not supported" });
  assert.deepEqual(a.events.map((e) => e.code), [
    "bad_json",
    "bad_message",
    "unknown_type",
    "bad_message",
    "empty",
    "binary",
  ]);
  assert.deepEqual(b.frames, [], "nobody else hears about it");
  assert.equal(a.open, true);
});

Deno.test("Hub: /quit closes the connection normally; /help lists the commands", () => {
  const hub = setup();
  const a = new FakeConnection();
  hub.connect(a);
  hub.receive(a, "/help");
  assert.match(a.frames.at(-1)!, /\/nick NAME[\s\S]*\/join ROOM[\s\S]*\/who[\s\S]*\/me ACTION/);
  hub.receive(a, "/quit");
  assert.equal(a.frames.at(-1), "* bye", "a line before the close, so a REPL sees it worked");
  assert.deepEqual(a.closedWith, { code: 1000, reason: "bye" });
});

Deno.test("Hub.broadcast() skips closed connections", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection();
  hub.connect(a, { name: "a" });
  hub.connect(b, { name: "b" });
  b.clear();
  b.open = false;
  hub.receive(a, "anyone?");
  assert.deepEqual(b.frames, []);
});

Deno.test("Hub: a connection whose send throws is closed and the others still get the message", () => {
  const hub = setup();
  const a = new FakeConnection();
  const broken = new FakeConnection();
  const c = new FakeConnection();
  hub.connect(a, { name: "a" });
  hub.connect(broken, { name: "broken" });
  hub.connect(c, { name: "c" });
  broken.throwOnSend = true;
  hub.receive(a, "hello");
  assert.equal(broken.closedWith?.code, 1011);
  assert.equal(c.frames.at(-1), "a: hello");
});

Deno.test("Hub: a broadcast encodes the event once per format, not once per recipient", () => {
  const hub = setup();
  const author = new FakeConnection("json");
  hub.connect(author, { name: "author" });
  for (let i = 0; i < 50; i++) hub.connect(new FakeConnection("json"));
  for (let i = 0; i < 50; i++) hub.connect(new FakeConnection("text"));
  const stringify = JSON.stringify;
  let calls = 0;
  JSON.stringify =
    ((...args: Parameters<typeof stringify>) => (calls++, stringify(...args))) as typeof stringify;
  try {
    hub.receive(author, stringify({ type: "say", text: "to all", ref: 1 }));
  } finally {
    JSON.stringify = stringify;
  }
  assert.equal(calls, 2, "one shared encoding plus the author's acknowledgement");
});

Deno.test("Hub: lines cannot forge other lines or notices", () => {
  const hub = setup();
  const a = new FakeConnection();
  const b = new FakeConnection();
  hub.connect(a, { name: "mallory" });
  hub.connect(b, { name: "bob" });
  hub.receive(a, "hi\n* admin joined\r\nbob: give me your password\x1b[2K");
  const last = b.frames.at(-1)!;
  assert.equal(last.includes("\n"), false);
  assert.equal(last.includes("\x1b"), false);
  assert.equal(last, "mallory: hi␊* admin joined␍␊bob: give me your password␛[2K");
});

Deno.test("Hub.closeAll() closes every connection with the given code", () => {
  const hub = setup();
  const conns = [new FakeConnection(), new FakeConnection("json")];
  for (const conn of conns) hub.connect(conn);
  hub.closeAll(1001, "server shutting down");
  assert.deepEqual(conns.map((c) => c.closedWith?.code), [1001, 1001]);
});

Deno.test("Hub: /join into a room where one's name is taken adds a suffix there only", () => {
  const hub = setup();
  const mine = new FakeConnection("json");
  const other = new FakeConnection();
  hub.connect(mine, { name: "alice" });
  hub.connect(other, { name: "alice", room: "dev" });
  hub.receive(mine, JSON.stringify({ type: "join", room: "dev" }));
  assert.equal(JSON.parse(mine.frames.at(-1)!).name, "alice-2");
  hub.receive(mine, JSON.stringify({ type: "join", room: "lobby" }));
  assert.equal(JSON.parse(mine.frames.at(-1)!).name, "alice", "back under the name it asked for");
});

// ---- history, recovery, typing, rooms ----------------------------------------------------------

function chatter(hub: Hub, count: number, room = "lobby") {
  const author = new FakeConnection();
  hub.connect(author, { name: "author", room });
  for (let i = 1; i <= count; i++) hub.receive(author, `m${i}`);
  return author;
}

Deno.test("Hub: a JSON client's welcome carries the last messages; a text client's does not", () => {
  const hub = new Hub({ now: clock, historyOnJoin: 3 });
  chatter(hub, 5);
  const json = new FakeConnection("json");
  const text = new FakeConnection("text");
  hub.connect(json, { name: "j" });
  hub.connect(text, { name: "t" });
  const welcome = json.events[0]!;
  assert.deepEqual((welcome.history as { text: string }[]).map((m) => m.text), ["m3", "m4", "m5"]);
  assert.equal((welcome.history as { type: string }[])[0]!.type, "message");
  assert.equal(welcome.recovered, undefined, "no since, no recovery flag");
  assert.deepEqual(text.frames, [
    "* you are t in #lobby; also here: author, j. Type /help for commands.",
  ]);
});

Deno.test("Hub: history replies and welcomes count against a connection's byte allowance; shared pages are the same bytes", () => {
  const hub = new Hub({
    now: clock,
    historyOnJoin: 50,
    replyBurstBytes: 10_000,
    replyBytesPerSecond: 1000,
  });
  const line = "x".repeat(100);
  for (const room of ["a", "b"]) {
    const author = new FakeConnection();
    hub.connect(author, { name: "author", room });
    for (let i = 0; i < 20; i++) hub.receive(author, `${room}${i} ${line}`);
  }
  const hopper = new FakeConnection("json");
  hub.connect(hopper, { name: "hopper", room: "a" });
  const first = hopper.events[0]!;
  assert.equal((first.history as unknown[]).length, 20, "the first welcome carries the history");
  // ~2.8 KB charged; the first reply may go past what is left (debt), the next ones wait.
  hub.receive(hopper, JSON.stringify({ type: "history", limit: 20, ref: 1 }));
  const reply = hopper.events.at(-1)!;
  assert.equal(reply.type, "history");
  assert.equal(reply.ref, 1);
  hub.receive(hopper, JSON.stringify({ type: "history", limit: 20, ref: 2 }));
  const refused = hopper.events.at(-1)!;
  assert.equal(refused.type, "error");
  assert.equal(refused.code, "rate_limited");
  assert.equal(refused.ref, 2);
  assert.match(
    String(refused.message),
    /at most 10 KiB at once and 1 KiB a second per connection; ask again in \d+ s/,
  );
  hopper.clear();
  hub.receive(hopper, JSON.stringify({ type: "join", room: "b", ref: 3 }));
  const welcome = hopper.events.find((event) => event.type === "welcome")!;
  assert.deepEqual(
    welcome.history,
    [],
    "hopping rooms past the allowance: a welcome without history",
  );
  assert.equal(welcome.ref, 3);
  // Another client gets the same page: the same bytes, encoded once (its ref spliced in).
  const other = new FakeConnection("json");
  hub.connect(other, { name: "other", room: "a" });
  hub.receive(other, JSON.stringify({ type: "history", limit: 20, ref: "x" }));
  const shared = other.events.at(-1)!;
  assert.deepEqual({ ...shared, ref: 1 }, reply, "the same page, with its own ref");
});

Deno.test("Hub: since= recovers exactly the missed messages, or says it cannot", () => {
  const store = new MemoryStore({ maxCount: 10 });
  const hub = new Hub({ now: clock, store, historyOnJoin: 2 });
  chatter(hub, 5);
  const back = new FakeConnection("json");
  hub.connect(back, { name: "back", since: 2 });
  assert.equal(back.events[0]!.recovered, true);
  assert.deepEqual((back.events[0]!.history as { id: number }[]).map((m) => m.id), [3, 4, 5]);

  const otherEpoch = new FakeConnection("json");
  hub.connect(otherEpoch, { name: "other", since: 2, epoch: "not-this-store" });
  assert.equal(
    otherEpoch.events[0]!.recovered,
    false,
    "an id from another id space recovers nothing",
  );
  const sameEpoch = new FakeConnection("json");
  hub.connect(sameEpoch, { name: "same", since: 2, epoch: store.epoch });
  assert.equal(sameEpoch.events[0]!.recovered, true);
  const malformed = new FakeConnection("json");
  hub.connect(malformed, { name: "bad", since: "abc" });
  assert.equal(malformed.events[0]!.recovered, undefined);
  assert.equal(malformed.events[1]!.code, "bad_message");

  const foreign = new FakeConnection("json");
  hub.connect(foreign, { name: "foreign", since: 99 }); // an id from another life of the server
  assert.equal(foreign.events[0]!.recovered, false);
  assert.deepEqual((foreign.events[0]!.history as { id: number }[]).map((m) => m.id), [4, 5]);

  chatter(hub, 20, "busy");
  const late = new FakeConnection("json");
  hub.connect(late, { name: "late", room: "busy", since: 3 }); // 4..10 are gone: only 10 kept
  assert.equal(late.events[0]!.recovered, false);
  assert.deepEqual((late.events[0]!.history as { id: number }[]).map((m) => m.id), [19, 20]);
});

Deno.test("Hub: /history prints past lines with their UTC time, distinct from live ones", () => {
  const hub = setup();
  chatter(hub, 3);
  const reader = new FakeConnection();
  hub.connect(reader, { name: "reader" });
  hub.receive(reader, "/history 2");
  assert.equal(
    reader.frames.at(-1),
    ["* last 2 in #lobby:", "[22:13Z] author: m2", "[22:13Z] author: m3", "* end of history"].join(
      "\n",
    ),
  );
  hub.receive(reader, "/join empty");
  hub.receive(reader, "/history");
  assert.equal(reader.frames.at(-1), "* no history in #empty yet");
  hub.receive(reader, "/history lots");
  assert.match(reader.frames.at(-1)!, /^! usage: \/history \[N\]/);
});

Deno.test("Hub: a JSON history request pages back with before and limit", () => {
  const hub = setup();
  chatter(hub, 10);
  const app = new FakeConnection("json");
  hub.connect(app, { name: "app" });
  hub.receive(app, JSON.stringify({ type: "history", before: 5, limit: 3, ref: "h" }));
  const page = JSON.parse(app.frames.at(-1)!);
  assert.deepEqual(
    { ...page, messages: page.messages.map((m: { id: number }) => m.id) },
    { type: "history", room: "lobby", messages: [2, 3, 4], more: true, ref: "h" },
  );
  hub.receive(app, JSON.stringify({ type: "history", before: 2, limit: 3 }));
  assert.equal(JSON.parse(app.frames.at(-1)!).more, false);
  hub.receive(app, JSON.stringify({ type: "history", limit: 5000 }));
  assert.equal(JSON.parse(app.frames.at(-1)!).code, "bad_message");
});

Deno.test("Hub: typing reaches the room's other JSON members, throttled", () => {
  let now = 0;
  const hub = new Hub({ now: () => now, typingIntervalMs: 2000 });
  const typist = new FakeConnection("json");
  const watcher = new FakeConnection("json");
  const terminal = new FakeConnection("text");
  hub.connect(typist, { name: "typist" });
  hub.connect(watcher, { name: "watcher" });
  hub.connect(terminal, { name: "terminal" });
  watcher.clear();
  terminal.clear();
  typist.clear();
  hub.receive(typist, '{"type":"typing"}');
  now = 500;
  hub.receive(typist, '{"type":"typing"}'); // dropped: too soon
  now = 2500;
  hub.receive(typist, '{"type":"typing"}');
  assert.deepEqual(watcher.events, [
    { type: "typing", room: "lobby", name: "typist", ts: 0 },
    { type: "typing", room: "lobby", name: "typist", ts: 2500 },
  ]);
  assert.deepEqual(terminal.frames, [], "terminals are spared");
  assert.deepEqual(typist.frames, []);
});

Deno.test("Hub: the room list counts members, busiest first", () => {
  const hub = setup();
  for (const room of ["a", "b", "b"]) hub.connect(new FakeConnection(), { room });
  const asker = new FakeConnection("json");
  hub.connect(asker, { room: "b" });
  hub.receive(asker, '{"type":"rooms","ref":1}');
  assert.deepEqual(JSON.parse(asker.frames.at(-1)!), {
    type: "rooms",
    rooms: [{ room: "b", members: 3 }, { room: "a", members: 1 }],
    ref: 1,
  });
  const text = new FakeConnection();
  hub.connect(text, { room: "a" });
  hub.receive(text, "/rooms");
  assert.equal(text.frames.at(-1), "* 2 rooms: b (3), a (2)");
});

Deno.test("Hub: a message the store cannot keep is refused, and nobody hears it", () => {
  const store = new MemoryStore();
  store.append = () => {
    throw new Error("disk full");
  };
  const hub = new Hub({ now: clock, store });
  const author = new FakeConnection("json");
  const other = new FakeConnection("json");
  hub.connect(author, { name: "a" });
  hub.connect(other, { name: "b" });
  other.clear();
  hub.receive(author, '{"type":"say","text":"lost?","ref":"x"}');
  assert.deepEqual(JSON.parse(author.frames.at(-1)!), {
    type: "error",
    code: "unavailable",
    message: "your message was not sent: the server could not store it (disk full)",
    ref: "x",
  });
  assert.deepEqual(other.frames, []);
});

Deno.test("Hub: history in one frame stays within its byte budget; recovery that does not fit says so", () => {
  const hub = new Hub({ now: clock, historyOnJoin: 1000 });
  const author = new FakeConnection();
  hub.connect(author, { name: "author" });
  const big = "\x01".repeat(5000); // shown as ␁: three bytes each once sanitized
  for (let i = 0; i < 40; i++) hub.receive(author, big);
  const joiner = new FakeConnection("json");
  hub.connect(joiner, { name: "joiner" });
  const welcome = joiner.frames[0]!;
  assert.ok(welcome.length < 600_000, `welcome is ${welcome.length} characters`);
  const history = JSON.parse(welcome).history as { id: number }[];
  assert.ok(history.length > 0 && history.length < 40, `${history.length} of 40 fit`);
  assert.equal(history.at(-1)!.id, 40, "the newest are the ones kept");
  const back = new FakeConnection("json");
  hub.connect(back, { name: "back", since: 1 });
  assert.equal(
    JSON.parse(back.frames[0]!).recovered,
    false,
    "39 missed messages do not fit one frame",
  );
});

Deno.test("Hub: a big room hears joins and leaves as one summary per interval, not one notice each", () => {
  const pending: (() => void)[] = [];
  const hub = new Hub({ now: clock, bigRoom: 3, deferPresence: (flush) => pending.push(flush) });
  const watcher = new FakeConnection("json");
  const terminal = new FakeConnection("text");
  hub.connect(watcher, { name: "watcher" });
  hub.connect(terminal, { name: "terminal" });
  hub.connect(new FakeConnection(), { name: "third" }); // 3 members: still a small room
  assert.equal(watcher.events.at(-1)!.type, "joined");
  watcher.clear();
  terminal.clear();
  const late = [new FakeConnection("json"), new FakeConnection(), new FakeConnection()];
  late.forEach((conn, i) => hub.connect(conn, { name: `late${i}` }));
  hub.disconnect(late[2]!);
  assert.deepEqual(watcher.frames, [], "no notice per join in a big room");
  assert.equal(pending.length, 1, "one summary scheduled");
  pending.shift()!();
  assert.deepEqual(watcher.events, [{
    type: "presence",
    room: "lobby",
    joined: ["late0", "late1"], // late2 came and went: counted, not listed
    left: ["late2"],
    joinedCount: 3,
    leftCount: 1,
    count: 5,
    ts: clock(),
  }]);
  assert.deepEqual(terminal.frames, ["* 3 joined, 1 left; 5 here now"]);
  const welcome = late[0]!.events[0]!;
  assert.deepEqual(
    welcome.members,
    ["watcher", "terminal", "third"],
    "a big room's welcome lists the first names",
  );
  assert.equal(welcome.count, 4, "and says how many there are");
  assert.match(late[1]!.frames[0]!, /also here: watcher, terminal, third and 1 more\./);
});

Deno.test("Hub: a summary waits as long as the room's size when it goes asks, not its size when the round began", async () => {
  const hub = new Hub({ bigRoom: 3 });
  const watcher = new FakeConnection("json");
  hub.connect(watcher, { name: "watcher" });
  for (let i = 0; i < 4; i++) hub.connect(new FakeConnection(), { name: `early${i}` });
  // The round began with the 4th member (a 500 ms wait); a storm makes it 3005 (a 1.5 s one).
  assert.equal(presenceInterval(4), 500);
  assert.equal(presenceInterval(3005), 1502.5);
  for (let i = 0; i < 3000; i++) hub.connect(new FakeConnection(), { name: `storm${i}` });
  watcher.clear();
  try {
    await new Promise((resolve) => setTimeout(resolve, 800));
    assert.equal(watcher.frames.length, 0, "not at 500 ms: the room has grown since");
    await until(() => watcher.events.length > 0, "the summary", 3000);
    const summary = watcher.events[0]!;
    assert.equal(summary.type, "presence");
    assert.equal(summary.joinedCount, 3002, "every join since the round began, in one summary");
    assert.equal(summary.count, 3005);
  } finally {
    hub.stop();
  }
});

Deno.test("Hub: a member who got alice-2 gets alice back when alice leaves (a reconnect beside its stale self)", () => {
  const hub = setup();
  const stale = new FakeConnection();
  const fresh = new FakeConnection("json");
  const bob = new FakeConnection();
  hub.connect(stale, { name: "alice" });
  hub.connect(bob, { name: "bob" });
  hub.connect(fresh, { name: "alice" });
  assert.equal(fresh.events[0]!.name, "alice-2");
  bob.clear();
  hub.disconnect(stale);
  assert.deepEqual(bob.frames, ["* alice left", "* alice-2 is now alice"]);
  const renamed = fresh.events.find((e) => e.type === "renamed")!;
  assert.deepEqual([renamed.from, renamed.to, renamed.ref], ["alice-2", "alice", undefined]);
  hub.receive(bob, "/who");
  assert.equal(bob.frames.at(-1), "* 2 in #lobby: bob, alice");
});

Deno.test("Hub: a name freed by /nick goes back to the member who wanted it", () => {
  const hub = setup();
  const first = new FakeConnection();
  const second = new FakeConnection();
  hub.connect(first, { name: "sam" });
  hub.connect(second, { name: "sam" });
  assert.ok(second.frames[0]!.startsWith("* you are sam-2"));
  hub.receive(first, "/nick samuel");
  assert.ok(second.frames.includes("* sam-2 is now sam"), second.frames.join("\n"));
});

Deno.test("presenceInterval(): 500 ms up to 1000 members, then in proportion, at most 10 s", () => {
  assert.deepEqual(
    [10, 1000, 5000, 10_000, 100_000].map(presenceInterval),
    [500, 500, 2500, 5000, 10_000],
  );
});

Deno.test("Hub: many asking for one name get a, a-2, a-3…, and a freed suffix is given out again", () => {
  const hub = setup();
  const conns = Array.from({ length: 50 }, () => new FakeConnection());
  for (const conn of conns) hub.connect(conn, { name: "a", room: "r" });
  const names = conns.map((conn) => /you are (\S+) in/.exec(conn.frames[0]!)![1]);
  assert.deepEqual(names, ["a", ...Array.from({ length: 49 }, (_, i) => `a-${i + 2}`)]);
  hub.disconnect(conns[2]!); // a-3 leaves
  const late = new FakeConnection();
  hub.connect(late, { name: "a", room: "r" });
  assert.match(late.frames[0]!, /^\* you are a-3 in #r/);
  const later = new FakeConnection();
  hub.connect(later, { name: "a", room: "r" });
  assert.match(later.frames[0]!, /^\* you are a-51 in #r/);
});

// ---- the send contract --------------------------------------------------------------------------

/** A memory store whose appends can be refused (a store reset), or left unanswered, on demand. */
class FlakyStore implements HistoryStore {
  readonly #inner = new MemoryStore();
  epoch = "e1";
  /** Refuses every append until refresh() adopts the new epoch, as Redis after losing data. */
  stale = false;
  stall = false;
  answer: (() => void) | undefined;
  append(room: string, draft: Draft, key?: string): Stored | Promise<Stored> {
    if (this.stale) return Promise.reject(new StoreReset("the shared store was reset"));
    const stored = this.#inner.append(room, draft, key);
    if (!this.stall) return stored;
    const later = new Promise<Stored>((resolve) => this.answer = () => resolve(stored));
    throw new Unconfirmed("the store did not answer in time", later);
  }
  latest(room: string, limit: number, before?: number) {
    return this.#inner.latest(room, limit, before);
  }
  after(room: string, since: number, budget?: number) {
    return this.#inner.after(room, since, budget);
  }
  head(room: string) {
    return this.#inner.head(room);
  }
  refresh(): void {
    if (!this.stale) return;
    this.stale = false;
    this.epoch = "e2";
  }
  close(): void {}
}

const acks = (conn: FakeConnection, ref: string) =>
  conn.events.filter((e) => e.type === "message" && e.ref === ref);

Deno.test("Hub: every message refused by a store reset is stored again and acknowledged, whoever noticed the reset first", async () => {
  const store = new FlakyStore();
  const hub = new Hub({ now: clock, store });
  const [alice, bob, carol] = ["json", "json", "json"].map((f) => new FakeConnection(f as "json"));
  hub.connect(alice!, { name: "alice" });
  hub.connect(bob!, { name: "bob" });
  hub.connect(carol!, { name: "carol" });
  store.stale = true; // both of the next two appends are refused
  hub.receive(alice!, JSON.stringify({ type: "say", text: "one", ref: "a" }));
  hub.receive(bob!, JSON.stringify({ type: "say", text: "two", ref: "b" }));
  await until(
    () => acks(bob!, "b").length + bob!.events.filter((e) => e.type === "error").length > 0,
    "bob's answer",
  );
  assert.equal(acks(alice!, "a").length, 1, "alice's message acknowledged once");
  assert.equal(acks(bob!, "b").length, 1, "bob's message acknowledged once");
  assert.ok(!alice!.events.some((e) => e.type === "error"), "no 'not sent'");
  assert.ok(!bob!.events.some((e) => e.type === "error"), "no 'not sent'");
  const texts = carol!.events.filter((e) => e.type === "message").map((e) => e.text);
  assert.deepEqual(texts, ["one", "two"]);
});

Deno.test("Hub: a resend with a kept key is acknowledged once, with its own ref, and nobody sees it twice", () => {
  const hub = new Hub({ now: clock });
  const alice = new FakeConnection("json");
  const bob = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  hub.connect(bob, { name: "bob" });
  hub.receive(alice, JSON.stringify({ type: "say", text: "hi", ref: "1", key: "k" }));
  hub.receive(alice, JSON.stringify({ type: "say", text: "hi", ref: "2", key: "k" }));
  const [first] = acks(alice, "1");
  const [second] = acks(alice, "2");
  assert.equal(acks(alice, "1").length, 1);
  assert.equal(acks(alice, "2").length, 1);
  assert.equal(second!.id, first!.id);
  assert.equal(alice.events.filter((e) => e.type === "message").length, 2, "two acks, no more");
  assert.equal(bob.events.filter((e) => e.type === "message").length, 1, "bob saw it once");
});

Deno.test("Hub: a store that answers late gets the author 'unknown', then the acknowledgement when it answers", async () => {
  const store = new FlakyStore();
  const hub = new Hub({ now: clock, store });
  const alice = new FakeConnection("json");
  const bob = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  hub.connect(bob, { name: "bob" });
  store.stall = true;
  hub.receive(alice, JSON.stringify({ type: "say", text: "late", ref: "x", key: "kx" }));
  const unknown = alice.events.find((e) => e.type === "unknown");
  assert.equal(unknown?.ref, "x");
  assert.equal(unknown?.key, "kx");
  assert.equal(acks(alice, "x").length, 0, "no acknowledgement yet");
  assert.equal(bob.events.filter((e) => e.type === "message").length, 0);
  store.answer!();
  await until(() => acks(alice, "x").length === 1, "the late acknowledgement");
  assert.equal(bob.events.filter((e) => e.type === "message").length, 1);
});

Deno.test("Hub: a welcome that waits for the store comes first; what was said meanwhile follows it, once", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob" });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  hub.receive(bob, JSON.stringify({ type: "say", text: "before the welcome" }));
  assert.deepEqual(alice.frames, [], "nothing reaches alice before her welcome");
  store.release();
  await until(() => alice.frames.length > 0, "alice's welcome");
  const [welcome, ...rest] = alice.events;
  assert.equal(welcome!.type, "welcome");
  const history = welcome!.history as { text: string }[];
  assert.deepEqual(history.map((m) => m.text), ["before the welcome"], "the welcome carries it");
  assert.equal(rest.filter((e) => e.type === "message").length, 0, "and it is not sent again");
  store.holding = false;
  hub.receive(bob, JSON.stringify({ type: "say", text: "after" }));
  assert.deepEqual(alice.events.at(-1)?.text, "after", "live messages flow after the welcome");
  hub.stop();
});

Deno.test("Hub: a store that cannot be read: a welcome without history, an error, presence at once, messages once it answers", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store, gapMs: 5 });
  store.fail = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  await until(() => alice.events.some((e) => e.type === "error"), "the unavailable error");
  const [welcome, error] = alice.events;
  assert.equal(welcome!.type, "welcome");
  assert.deepEqual(welcome!.history, []);
  assert.equal(error!.code, "unavailable");
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob" });
  assert.ok(alice.events.some((e) => e.type === "joined" && e.name === "bob"), "presence flows");
  // Where the room stands is unknown until the store answers: the message waits for it.
  hub.receive(bob, JSON.stringify({ type: "say", text: "hello" }));
  store.fail = false;
  await until(
    () => alice.events.some((e) => e.type === "message" && e.text === "hello"),
    "the message, once the store answers",
  );
  assert.equal(alice.events.filter((e) => e.type === "message").length, 1);
  hub.stop();
});

Deno.test("Hub: a page that comes back within the grace is the same member, and nobody is told it left or came", async () => {
  const hub = new Hub({ now: clock, graceMs: 60 });
  const bob = new FakeConnection("json");
  hub.connect(bob, { name: "bob" });
  const page = new FakeConnection("json");
  hub.connect(page, { name: "alice", session: "tab-0000001" });
  bob.frames.length = 0;
  hub.disconnect(page, true); // a reload: went away without a goodbye
  const again = new FakeConnection("json");
  hub.connect(again, { name: "alice", session: "tab-0000001" });
  assert.equal(again.events[0]!.type, "welcome");
  assert.equal(again.events[0]!.name, "alice", "the same name, not alice-2");
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(bob.events.map((e) => e.type), [], "no left, no joined");
  hub.receive(bob, JSON.stringify({ type: "say", text: "still there?" }));
  assert.equal(again.events.at(-1)!.text, "still there?");
  // Gone for good: told once the grace is over. A REPL (no session) is told at once.
  hub.disconnect(again, true);
  assert.deepEqual(bob.events.filter((e) => e.type === "left"), []);
  await until(() => bob.events.some((e) => e.type === "left" && e.name === "alice"), "left");
  const repl = new FakeConnection("text");
  hub.connect(repl, { name: "carol" });
  hub.disconnect(repl, true);
  assert.ok(bob.events.some((e) => e.type === "left" && e.name === "carol"), "at once");
  hub.stop();
});

Deno.test("Hub: the renamed member and the room get one rename with the same time, even as the clock moves", () => {
  let tick = 1_700_000_000_000;
  const hub = new Hub({ now: () => tick++, server: "natter/test" });
  const a = new FakeConnection("json");
  const b = new FakeConnection("json");
  hub.connect(a, { name: "bob" });
  hub.connect(b, { name: "alice" });
  a.clear();
  b.clear();
  hub.receive(a, JSON.stringify({ type: "nick", name: "robert", ref: 1 }));
  const own = a.events.find((e) => e.type === "renamed")!;
  const seen = b.events.find((e) => e.type === "renamed")!;
  assert.equal(own.ref, 1);
  assert.equal(typeof own.ts, "number");
  assert.equal(seen.ts, own.ts);
});

Deno.test("Hub: quick joins while the store is slow: each join is answered once, and only the last room welcomes", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  const bob = new FakeConnection("json");
  const carol = new FakeConnection("json");
  hub.connect(bob, { name: "bob", room: "r" });
  hub.connect(carol, { name: "carol", room: "s" });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  hub.receive(alice, JSON.stringify({ type: "join", room: "r", ref: "1" }));
  hub.receive(bob, JSON.stringify({ type: "say", text: "in r, first stay" }));
  hub.receive(alice, JSON.stringify({ type: "join", room: "s", ref: "2" }));
  hub.receive(carol, JSON.stringify({ type: "say", text: "in s" }));
  hub.receive(alice, JSON.stringify({ type: "join", room: "r", ref: "3" }));
  store.release();
  await until(() => alice.events.some((e) => e.ref === "3"), "the last join's welcome");
  store.holding = false;
  hub.receive(bob, JSON.stringify({ type: "say", text: "live in r" }));
  const events = alice.events;
  const welcomes = events.filter((e) => e.type === "welcome");
  assert.deepEqual(welcomes.map((e) => [e.room, e.ref]), [["r", "3"]], "one welcome: the last");
  for (const ref of ["1", "2", "3"]) {
    assert.equal(events.filter((e) => e.ref === ref).length, 1, `join ${ref} answered once`);
  }
  const after = events.slice(events.indexOf(welcomes[0]!) + 1);
  assert.ok(!after.some((e) => e.room === "s"), "nothing from #s after the welcome to #r");
  assert.deepEqual(
    after.filter((e) => e.type === "message").map((e) => e.text),
    ["live in r"],
    "what #r's welcome carried is not sent again",
  );
  hub.stop();
});

Deno.test("Hub: a message said before its author's welcome is acknowledged, even when the welcome carries it", async () => {
  const store = new TestStore();
  const hub = new Hub({ now: clock, store });
  store.holding = true;
  const alice = new FakeConnection("json");
  hub.connect(alice, { name: "alice" });
  hub.receive(alice, JSON.stringify({ type: "say", text: "early", ref: "a" }));
  store.release();
  await until(() => alice.events.some((e) => e.type === "welcome"), "the welcome");
  const [welcome] = alice.events;
  assert.deepEqual((welcome!.history as { text: string }[]).map((m) => m.text), ["early"]);
  assert.equal(alice.events.filter((e) => e.ref === "a").length, 1, "the ack, with its ref");
  hub.stop();
});

Deno.test("Hub: since= recovers what was missed up to one frame's worth as JSON, not half of it", () => {
  /** The welcome of a client back with since=1 after 25 messages of 16 KiB of `char`. */
  const recoveryOf = (char: string) => {
    const hub = new Hub({ now: clock, maxMessageBytes: 16 * 1024, historyOnJoin: 5 });
    const author = new FakeConnection();
    hub.connect(author, { name: "author", room: "big" });
    for (let i = 1; i <= 25; i++) hub.receive(author, `${i} ${char.repeat(16 * 1024 - 8)}`);
    const back = new FakeConnection("json");
    hub.connect(back, { name: "back", room: "big", since: 1 });
    assert.ok(back.frames[0]!.length <= 512 * 1024 + 1024, "the welcome stays one frame's size");
    return back.events[0]!;
  };
  // 24 messages of plain text: 384 KiB as JSON, under the 512 KiB a frame carries.
  const plain = recoveryOf("y");
  assert.equal(plain.recovered, true);
  assert.equal((plain.history as unknown[]).length, 24);
  // Text that JSON escapes counts as what it becomes: quotes double, 768 KiB is more than a frame.
  assert.equal(recoveryOf('"').recovered, false);
});
