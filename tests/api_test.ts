/**
 * The server API (issue 17): every route with the right key and with a wrong one, against a
 * real process (natter's own listener reads the bodies) and in process (`Deno.serve`).
 */

import assert from "node:assert/strict";
import { Api } from "../lib/transport/api.ts";
import type { Hub } from "../lib/chat/hub.ts";
import type { HistoryStore } from "../lib/store/history.ts";
import { DEFAULTS } from "../lib/ops/config.ts";
import {
  Client,
  ServerProcess,
  signedToken,
  startServer,
  TEST_JWT_SECRET,
  until,
} from "./helpers.ts";

const KEY = "api-key-0123456789abcdef";
const SECRET = TEST_JWT_SECRET;

/** A call to the API at `base`: its status and JSON body. */
async function call(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  key: string | null = KEY,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const response = await fetch(`${base}${path}`, {
    method,
    headers,
    ...(body === undefined || method === "GET"
      ? {}
      : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, json: text === "" ? {} : JSON.parse(text) };
}

Deno.test("the server API through natter's own listener: publish, rooms, members, history, delete, disconnect", async () => {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--api-key",
    KEY,
    "--jwt-secret",
    SECRET,
    "--guests",
    "yes",
  ]);
  try {
    const port = await server.port();
    const base = `http://127.0.0.1:${port}`;
    const token = await signedToken({ sub: "u-42", name: "dora" }, { ttl: 600 });
    const reader = await Client.json(`ws://127.0.0.1:${port}/?room=news&name=reader`);
    const dora = await Client.open(`ws://127.0.0.1:${port}/?room=news&token=${token}`);

    // Every route refuses a missing or wrong key.
    for (
      const [method, path] of [
        ["POST", "/api/publish"],
        ["GET", "/api/rooms"],
        ["GET", "/api/rooms/news/members"],
        ["GET", "/api/rooms/news/history"],
        ["POST", "/api/disconnect"],
        ["DELETE", "/api/rooms/news/messages/1"],
      ]
    ) {
      assert.equal((await call(base, method!, path!, {}, null)).status, 401, `${method} ${path}`);
      assert.equal((await call(base, method!, path!, {}, "wrong-key-wrong-key-1")).status, 401);
    }
    // Counted, for an operator to see guessing (and logged, at most twice a minute).
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^natter_refused_total\{reason="api_key"\} 12$/m);
    await until(
      () =>
        /API requests refused for a missing or wrong key.*count=1 .*from=127\.0\.0\.1/.test(
          server.stderr,
        ),
      "the log line, with the address",
    );

    const published = await call(base, "POST", "/api/publish", {
      room: "news",
      name: "bot",
      text: "Release 1.2 is out",
    });
    assert.equal(published.status, 200, JSON.stringify(published.json));
    const id = published.json.id as number;
    const seen = await reader.event("message", (e) => e.text === "Release 1.2 is out");
    assert.deepEqual([seen.id, seen.from], [id, "bot"]);

    const bad = [
      [{ room: "no room!", name: "bot", text: "x" }, 400, "bad_room"],
      [{ room: "news", name: "b o t", text: "x" }, 400, "bad_name"],
      [{ room: "news", name: "bot", text: "  " }, 400, "empty"],
      [{ room: "news", name: "bot", text: "x".repeat(20_000) }, 413, "too_long"],
      ["not json", 400, "bad_json"],
    ] as const;
    for (const [body, status, code] of bad) {
      const answer = await call(base, "POST", "/api/publish", body);
      assert.equal(answer.status, status, JSON.stringify(body).slice(0, 60));
      assert.equal((answer.json.error as { code: string }).code, code);
    }

    const rooms = await call(base, "GET", "/api/rooms");
    assert.deepEqual(rooms.json.rooms, [{ room: "news", members: 2 }]);
    const members = await call(base, "GET", "/api/rooms/news/members");
    assert.deepEqual((members.json.members as string[]).sort(), ["dora", "~reader"]);
    const history = await call(base, "GET", "/api/rooms/news/history?limit=10");
    assert.deepEqual((history.json.messages as { id: number }[]).map((m) => m.id), [id]);
    const since = await call(base, "GET", `/api/rooms/news/history?since=${id - 1}`);
    assert.equal(since.json.complete, true);
    assert.equal((await call(base, "GET", "/api/rooms/news/history?limit=0")).status, 400);

    assert.equal((await call(base, "DELETE", "/api/rooms/news/messages/999")).status, 404);
    const deleted = await call(base, "DELETE", `/api/rooms/news/messages/${id}`);
    assert.deepEqual(deleted.json, { deleted: id, room: "news" });
    assert.equal((await reader.event("deleted")).id, id);

    assert.equal((await call(base, "POST", "/api/disconnect", {})).status, 400);
    // A field of the wrong type is an error, not left out: this must not disconnect ~reader.
    const wrongType = await call(base, "POST", "/api/disconnect", { sub: 42, name: "~reader" });
    assert.equal(wrongType.status, 400);
    assert.match(String((wrongType.json.error as { message: string }).message), /'sub'/);
    assert.equal((await call(base, "POST", "/api/disconnect", { name: "" })).status, 400);
    const bySub = await call(base, "POST", "/api/disconnect", { sub: "u-42" });
    assert.equal(bySub.status, 200);
    assert.equal((await dora.closed).code, 4004);
    await call(base, "POST", "/api/disconnect", { name: "~reader" });
    assert.equal((await reader.closed).code, 4004);

    assert.equal((await call(base, "GET", "/api/nothing")).status, 404);
    assert.equal((await call(base, "GET", "/api/rooms/")).status, 404);
    assert.equal((await call(base, "GET", "/api/rooms/news")).status, 404);
    const wrongMethod = await fetch(`${base}/api/publish`, {
      headers: { authorization: `Bearer ${KEY}` },
    });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "POST");
    await wrongMethod.body?.cancel();
    const malformed = await call(base, "GET", "/api/rooms/%E0%A4%A/members");
    assert.equal(malformed.status, 400);
    assert.equal((malformed.json.error as { code: string }).code, "bad_path");
    const both = await call(base, "GET", "/api/rooms/news/history?since=1&before=4");
    assert.equal(both.status, 400);
    // Text within the cap that a client's JSON escapes larger is still taken: 5000 CJK
    // characters (15,000 bytes of UTF-8) written as \\u escapes (30,000 bytes of body).
    const escaped = await call(
      base,
      "POST",
      "/api/publish",
      `{"room":"news","name":"bot","text":"${"\\u6f22".repeat(5000)}"}`,
    );
    assert.equal(escaped.status, 200, JSON.stringify(escaped.json));
  } finally {
    await server.stop();
  }
});

Deno.test("the server API in process: the rate limit answers 429; without --api-key there is no /api/", async () => {
  const server = startServer({ apiKey: KEY, rateBurst: 2, ratePerSecond: 0.1 });
  try {
    const base = server.http("").replace(/\/$/, "");
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      statuses.push(
        (await call(base, "POST", "/api/publish", { room: "r", name: "bot", text: `n${i}` }))
          .status,
      );
    }
    assert.deepEqual(statuses, [200, 200, 429]);
  } finally {
    await server.close();
  }
  const plain = startServer();
  try {
    const response = await fetch(plain.http("/api/rooms"), {
      headers: { authorization: `Bearer ${KEY}` },
    });
    assert.equal(response.status, 404);
    await response.body?.cancel();
  } finally {
    await plain.close();
  }
});

Deno.test("the server API: wrong keys that come within the log's quiet time are logged when it ends, with no further request", async () => {
  const lines: string[] = [];
  const log = {
    info() {},
    error() {},
    warn(message: string, fields?: Record<string, unknown>) {
      lines.push(`${message} ${JSON.stringify(fields)}`);
    },
  };
  const options = { ...DEFAULTS, apiKey: KEY };
  const api = new Api(options, {} as Hub, {} as HistoryStore, undefined, log, 200);
  const wrong = () =>
    api.handle(
      new Request("http://x/api/rooms", { headers: { authorization: "Bearer nope" } }),
      new URL("http://x/api/rooms"),
      "192.0.2.7",
    );
  assert.equal((await wrong()).status, 401);
  assert.equal(lines.length, 1, "the first is logged at once");
  for (let i = 0; i < 3; i++) assert.equal((await wrong()).status, 401);
  assert.equal(lines.length, 1, "the next three wait for the quiet time's end");
  await until(() => lines.length === 2, "the three logged when the quiet time ends", 2000);
  assert.match(lines[1]!, /"count":3/);
  assert.match(lines[1]!, /192\.0\.2\.7/);
  await (await wrong()).body?.cancel();
  api.stop(); // what is left is logged at shutdown
  assert.equal(lines.length, 3);
});
