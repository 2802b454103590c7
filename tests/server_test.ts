/** Integration tests: a real server on port 0, real WebSocket clients, real HTTP. */

import assert from "node:assert/strict";
import { Client, rawExchange, startServer, until } from "./helpers.ts";

Deno.test("GET / serves the page with its type, an ETag, and 304 when it matches", async () => {
  const server = startServer();
  try {
    const page = await fetch(server.http("/"));
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(await page.text(), /<title>natter<\/title>/);
    const etag = page.headers.get("etag");
    assert.ok(etag);
    const again = await fetch(server.http("/"), { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    assert.equal(await again.text(), "");
    for (const tag of [`W/${etag}`, `"other", ${etag}`, "*"]) {
      const matched = await fetch(server.http("/"), { headers: { "if-none-match": tag } });
      assert.equal(matched.status, 304, tag);
      await matched.body?.cancel();
    }
    const stale = await fetch(server.http("/"), { headers: { "if-none-match": '"stale"' } });
    assert.equal(stale.status, 200);
    await stale.body?.cancel();
    const script = await fetch(server.http("/app.js"));
    assert.equal(script.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.match(await script.text(), /natter\.v1/);
    const css = await fetch(server.http("/style.css"));
    assert.equal(css.headers.get("content-type"), "text/css; charset=utf-8");
    await css.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("HEAD / answers with headers and no body; other methods get 405, unknown paths 404", async () => {
  const server = startServer();
  try {
    const head = await fetch(server.http("/"), { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(await head.text(), "");
    const post = await fetch(server.http("/"), { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    await post.body?.cancel();
    const missing = await fetch(server.http("/nope"));
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    // fetch() would normalise the path away; send it raw.
    const traversal = await rawExchange(
      server.port,
      "GET /../lib/app.ts HTTP/1.1\r\nhost: x\r\n\r\n",
    );
    assert.match(traversal, /^HTTP\/1\.1 404/);
    const wsPost = await fetch(server.http("/ws"), { method: "POST", body: "x" });
    assert.equal(wsPost.status, 405);
    await wsPost.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("GET /ws without an upgrade gets 426 and says how to connect", async () => {
  const server = startServer();
  try {
    const response = await fetch(server.http("/ws"));
    assert.equal(response.status, 426);
    assert.equal(response.headers.get("upgrade"), "websocket");
    assert.match(await response.text(), /new WebSocket/);
  } finally {
    await server.close();
  }
});

Deno.test("the seed flow: a notice on join, the line at the other end, no echo, a notice on leave", async () => {
  const server = startServer();
  const first = await Client.open(server.ws());
  const second = await Client.open(server.ws());
  try {
    const joined = await first.next((line) => line.endsWith(" joined"));
    const name = /^\* (guest-\d+) joined$/.exec(joined)?.[1];
    assert.ok(name, `a guest name from the port in ${JSON.stringify(joined)}`);
    second.send("Your message here..");
    assert.equal(
      await first.next((line) => line.includes("Your message")),
      `${name}: Your message here..`,
    );
    assert.deepEqual(await second.unread(), [], "the sender gets nothing back");
    await second.close();
    assert.equal(await first.next((line) => line.endsWith(" left")), `* ${name} left`);
  } finally {
    await first.close();
    await second.close();
    await server.close();
  }
});

Deno.test("rooms are isolated: messages, joins and renames stay in their room", async () => {
  const server = startServer();
  const a = await Client.open(server.ws("/?room=dev&name=a"));
  const outsider = await Client.open(server.ws("/?room=ops&name=o"));
  const b = await Client.open(server.ws("/ws?room=dev&name=b"));
  try {
    b.send("dev only");
    assert.equal(await a.next((line) => line.startsWith("b:")), "b: dev only");
    b.send("/nick bee");
    await a.next((line) => line === "* b is now bee");
    await b.close();
    await a.next((line) => line === "* bee left");
    assert.deepEqual(await outsider.unread(), []);
  } finally {
    await Promise.all([a.close(), b.close(), outsider.close()]);
    await server.close();
  }
});

Deno.test("JSON clients: the author's copy carries its ref, the others get it once", async () => {
  const server = startServer();
  const alice = await Client.json(server.ws("/ws?name=alice"));
  const bob = await Client.json(server.ws("/ws?name=bob"));
  const carol = await Client.open(server.ws("/?name=carol"));
  try {
    assert.equal(alice.socket.protocol, "natter.v1");
    alice.send({ type: "say", text: "hello", ref: "m1" });
    const ack = await alice.event("message");
    assert.equal(ack.ref, "m1");
    assert.equal(ack.from, "alice");
    assert.equal(ack.text, "hello");
    assert.equal(typeof ack.id, "number");
    assert.ok(Math.abs(Number(ack.ts) - Date.now()) < 5000);
    const seen = await bob.event("message");
    const { ref: _ref, ...shared } = ack;
    assert.deepEqual(seen, shared);
    assert.equal(await carol.next((line) => line.startsWith("alice")), "alice: hello");
    assert.deepEqual(
      (await bob.unread()).filter((line) => line.includes('"message"')),
      [],
      "exactly once",
    );
  } finally {
    await Promise.all([alice.close(), bob.close(), carol.close()]);
    await server.close();
  }
});

Deno.test("JSON clients: welcome, presence, rename and join round trip", async () => {
  const server = startServer();
  const alice = await Client.json(server.ws("/?room=Dev&name=alice"));
  try {
    const welcome = JSON.parse(alice.lines[0]!);
    assert.deepEqual(
      { ...welcome, server: undefined, epoch: undefined },
      {
        type: "welcome",
        protocol: "natter.v1",
        server: undefined,
        epoch: undefined,
        name: "alice",
        room: "dev",
        members: ["alice"],
        count: 1,
        history: [],
      },
    );
    assert.match(welcome.server, /^natter\/\d+\.\d+\.\d+$/);
    assert.equal(typeof welcome.epoch, "string");
    const bob = await Client.json(server.ws("/?room=dev&name=bob"));
    assert.deepEqual(JSON.parse(bob.lines[0]!).members, ["alice", "bob"]);
    assert.equal((await alice.event("joined")).name, "bob");
    bob.send({ type: "nick", name: "robert", ref: 1 });
    assert.deepEqual(await bob.event("renamed"), {
      type: "renamed",
      room: "dev",
      from: "bob",
      to: "robert",
      ts: (await alice.event("renamed")).ts,
      ref: 1,
    });
    alice.send({ type: "who", ref: "w" });
    assert.deepEqual((await alice.event("members")).members, ["alice", "robert"]);
    bob.send({ type: "join", room: "elsewhere", ref: 2 });
    const moved = await bob.event("welcome", (event) => event.ref === 2);
    assert.equal(moved.room, "elsewhere");
    assert.equal((await alice.event("left")).name, "robert");
    await bob.close();
  } finally {
    await alice.close();
    await server.close();
  }
});

Deno.test("bad input gets an error event and the connection stays usable", async () => {
  const server = startServer();
  const json = await Client.json(server.ws("/?name=j"));
  const text = await Client.open(server.ws("/?name=t"));
  try {
    json.send("{oops");
    assert.equal((await json.event("error")).code, "bad_json");
    json.send({ type: "fly" });
    assert.equal((await json.event("error")).code, "unknown_type");
    json.send({ type: "say", ref: "r9" });
    assert.deepEqual(await json.event("error"), {
      type: "error",
      code: "bad_message",
      message: "'say' needs a string field 'text'",
      ref: "r9",
    });
    json.socket.send(new Uint8Array([1, 2, 3]));
    assert.equal((await json.event("error")).code, "binary");
    text.send("/nick has space");
    assert.match(
      await text.next((line) => line.startsWith("!")),
      /^! name "has space" is not allowed/,
    );
    text.socket.send(new Uint8Array([0xff]));
    assert.match(
      await text.next((line) => line.startsWith("!")),
      /^! binary frames are not supported/,
    );
    text.send("still here");
    assert.equal((await json.event("message")).text, "still here");
  } finally {
    await Promise.all([json.close(), text.close()]);
    await server.close();
  }
});

Deno.test("natter.v1 is chosen when offered among others; otherwise the connection speaks text", async () => {
  const server = startServer();
  const both = await Client.open(server.ws("/"), ["chat.other", "natter.v1"]);
  const other = await Client.open(server.ws("/"), "chat.other");
  try {
    assert.equal(both.socket.protocol, "natter.v1");
    assert.equal(JSON.parse(both.lines[0]!).type, "welcome");
    assert.equal(other.socket.protocol, "", "no subprotocol was chosen");
    assert.match(other.lines[0]!, /^\* you are guest-\d+ in #lobby/);
  } finally {
    await Promise.all([both.close(), other.close()]);
    await server.close();
  }
});

Deno.test("/quit closes with 1000; shutdown closes everyone with 1001", async () => {
  const server = startServer();
  const quitter = await Client.open(server.ws());
  const stayer = await Client.open(server.ws());
  try {
    quitter.send("/quit");
    assert.equal((await quitter.closed).code, 1000);
    const stopping = server.app.shutdown(1000);
    const closed = await stayer.closed;
    assert.equal(await stopping, 0, "every socket finished closing");
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "server shutting down");
  } finally {
    await server.close();
  }
});

Deno.test("under a burst, events for one connection are packed into fewer frames, in order", async () => {
  const server = startServer({ rateBurst: 100, ratePerSecond: 100 });
  const reader = await Client.open(server.ws("/?name=reader"));
  const sender = await Client.open(server.ws("/?name=sender"));
  try {
    await reader.next((line) => line === "* sender joined");
    const framesBefore = reader.frames;
    for (let i = 1; i <= 50; i++) sender.send(`burst ${i}`);
    await until(() => reader.lines.includes("sender: burst 50"), "the whole burst");
    const burst = reader.lines.filter((line) => line.startsWith("sender: burst"));
    assert.deepEqual(burst, Array.from({ length: 50 }, (_, i) => `sender: burst ${i + 1}`));
    const frames = reader.frames - framesBefore;
    assert.ok(frames < 50, `50 events came in ${frames} frames`);
  } finally {
    await Promise.all([reader.close(), sender.close()]);
    await server.close();
  }
});

Deno.test("/join to the room you are in answers with one line, not a second welcome and its history", async () => {
  const server = startServer();
  try {
    const url = `ws://127.0.0.1:${server.port}/?room=r`;
    const text = await Client.open(`${url}&name=t`);
    for (let i = 0; i < 5; i++) text.send(`line ${i}`);
    const json = await Client.json(`${url}&name=j`);
    await text.next((line) => line === "* j joined");
    text.send("/join r");
    assert.equal(await text.next(), "* already in #r");
    json.send({ type: "join", room: "r", ref: "x" });
    const answer = JSON.parse(await json.next((line) => line.includes('"ref":"x"')));
    assert.deepEqual(answer, { type: "notice", text: "already in #r", ref: "x" });
    assert.deepEqual(await text.unread(), []);
    assert.equal((await json.unread()).filter((line) => line.includes('"welcome"')).length, 0);
    await Promise.all([text.close(), json.close()]);
  } finally {
    await server.close();
  }
});
