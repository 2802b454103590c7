/** Who may connect, and the HTTP endpoints around the socket: a real server, real requests. */

import assert from "node:assert/strict";
import { Client, rawExchange, RawSocket, startServer, upgradeRequest } from "./helpers.ts";

function status(head: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
}

Deno.test("malformed upgrades are refused before a socket exists (RFC 6455 §4.2)", async () => {
  const server = startServer();
  try {
    const ok = await rawExchange(server.port, upgradeRequest());
    assert.equal(status(ok), 101, ok);
    const noKey = await rawExchange(
      server.port,
      upgradeRequest("/", { "sec-websocket-key": null }),
    );
    assert.equal(status(noKey), 400);
    assert.match(noKey, /Sec-WebSocket-Key is missing or malformed/);
    const badKey = await rawExchange(
      server.port,
      upgradeRequest("/", { "sec-websocket-key": "short" }),
    );
    assert.equal(status(badKey), 400);
    const version = await rawExchange(
      server.port,
      upgradeRequest("/", { "sec-websocket-version": "8" }),
    );
    assert.equal(status(version), 426);
    assert.match(version, /sec-websocket-version: 13/i);
    const noVersion = await rawExchange(
      server.port,
      upgradeRequest("/", { "sec-websocket-version": null }),
    );
    assert.equal(status(noVersion), 426);
    assert.equal(server.app.metrics.refused.get("bad_handshake"), 2);
    assert.equal(server.app.metrics.refused.get("bad_version"), 2);
  } finally {
    await server.close();
  }
});

Deno.test("a page from another origin gets 403; the server's own origin, listed ones and no Origin get in", async () => {
  const server = startServer({ allowOrigins: ["https://friend.example"] });
  try {
    const foreign = await rawExchange(
      server.port,
      upgradeRequest("/", { origin: "https://evil.example" }),
    );
    assert.equal(status(foreign), 403, foreign);
    const own = await rawExchange(
      server.port,
      upgradeRequest("/", { origin: "http://127.0.0.1", host: "127.0.0.1" }),
    );
    assert.equal(status(own), 101, own);
    const listed = await rawExchange(
      server.port,
      upgradeRequest("/", { origin: "https://friend.example" }),
    );
    assert.equal(status(listed), 101);
    const script = await rawExchange(server.port, upgradeRequest("/"));
    assert.equal(status(script), 101);
  } finally {
    await server.close();
  }
  const open = startServer({ allowOrigins: ["*"] });
  try {
    const any = await rawExchange(
      open.port,
      upgradeRequest("/", { origin: "https://anyone.example" }),
    );
    assert.equal(status(any), 101);
  } finally {
    await open.close();
  }
});

Deno.test("with a token, a wrong or missing one gets 401 and the right one gets in three ways", async () => {
  const token = "correct-horse-battery";
  const server = startServer({ token });
  try {
    assert.equal(status(await rawExchange(server.port, upgradeRequest("/"))), 401);
    const wrong = await rawExchange(server.port, upgradeRequest("/?token=wrong-horse-battery"));
    assert.equal(status(wrong), 401);
    assert.match(wrong, /www-authenticate: Bearer/i);
    assert.equal(status(await rawExchange(server.port, upgradeRequest(`/?token=${token}`))), 101);
    const header = await rawExchange(
      server.port,
      upgradeRequest("/", { authorization: `Bearer ${token}` }),
    );
    assert.equal(status(header), 101);
    const viaProtocol = await Client.open(server.ws("/"), ["natter.v1", `natter.token.${token}`]);
    assert.equal(viaProtocol.socket.protocol, "natter.v1", "the token entry is never echoed back");
    await viaProtocol.close();

    const auth = await fetch(server.http("/auth"));
    assert.deepEqual(await auth.json(), { required: true, accepted: false });
    const good = await fetch(server.http("/auth"), {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.deepEqual(await good.json(), { required: true, accepted: true });
  } finally {
    await server.close();
  }
});

Deno.test("past --max-connections upgrades get 503; past --max-per-address, 429", async () => {
  const full = startServer({ maxConnections: 2 });
  const clients = [await Client.open(full.ws()), await Client.open(full.ws())];
  try {
    const refused = await rawExchange(full.port, upgradeRequest());
    assert.equal(status(refused), 503, refused);
    assert.match(refused, /retry-after: 10/i);
    await clients.pop()!.close();
    const third = await Client.open(full.ws());
    clients.push(third);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await full.close();
  }
  const limited = startServer({ maxPerAddress: 1 });
  const first = await Client.open(limited.ws());
  try {
    assert.equal(status(await rawExchange(limited.port, upgradeRequest())), 429);
  } finally {
    await first.close();
    await limited.close();
  }
});

Deno.test("GET /healthz reports status, uptime, connections and rooms", async () => {
  const server = startServer();
  const client = await Client.open(server.ws("/?room=a"));
  try {
    const response = await fetch(server.http("/healthz"));
    assert.equal(response.headers.get("content-type"), "application/json");
    const health = await response.json();
    assert.equal(health.status, "ok");
    assert.equal(health.connections, 1);
    assert.equal(health.rooms, 1);
    assert.equal(typeof health.uptime, "number");
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("GET /metrics counts connections, messages, deliveries, refusals and closes", async () => {
  const server = startServer({ rateBurst: 1, ratePerSecond: 0.001 });
  const a = await Client.open(server.ws("/?name=a"));
  const b = await Client.open(server.ws("/?name=b"));
  try {
    a.send("one");
    await b.next((line) => line === "a: one");
    a.send("two"); // over the rate: refused
    await a.next((line) => line.startsWith("! slow down"));
    await rawExchange(server.port, upgradeRequest("/", { "sec-websocket-version": "7" }));
    await b.close();
    await a.next((line) => line === "* b left");
    const text = await (await fetch(server.http("/metrics"))).text();
    const value = (name: string) =>
      Number(new RegExp(`^natter_${name} (\\S+)$`, "m").exec(text)?.[1]);
    assert.equal(value("connections"), 1);
    assert.equal(value("connections_opened_total"), 2);
    assert.equal(value("messages_in_total"), 2);
    assert.equal(value("rate_limited_total"), 1);
    assert.ok(value("deliveries_total") >= 5, text);
    assert.ok(value("bytes_out_total") > 0);
    assert.match(text, /^natter_refused_total\{reason="bad_version"\} 1$/m);
    assert.match(text, /^natter_closes_total\{reason="client_closed"\} 1$/m);
    assert.match(text, /^# TYPE natter_deliveries_total counter$/m);
  } finally {
    await a.close();
    await server.close();
  }
});

Deno.test("while shutting down, new upgrades get 503 and /healthz says stopping", async () => {
  const server = startServer();
  const lingering = await RawSocket.open(server.port); // never answers the close: keeps it draining
  try {
    const stopping = server.app.shutdown(2000);
    const refused = await rawExchange(server.port, upgradeRequest());
    assert.equal(status(refused), 503, refused);
    const health = await fetch(server.http("/healthz"));
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, "stopping");
    lingering.close();
    assert.equal(await stopping, 0, "the last socket went when its peer closed");
  } finally {
    lingering.close();
    await server.close();
  }
});
