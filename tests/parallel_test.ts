/**
 * `deno serve --parallel serve.ts` with two workers: clients that land on different workers
 * chat, see each other, and share history and ids (BroadcastChannel + shared in-memory SQLite).
 */

import assert from "node:assert/strict";
import { Client, ServerProcess, sleep, until } from "./helpers.ts";
import { freePort } from "./redis_server.ts";

const SERVE = new URL("../serve.ts", import.meta.url).pathname;
/** Clients: with two workers, all landing on one has odds of 2 in 65536. */
const COUNT = 16;
const ALL_IDS = [...Array(COUNT).keys()].map((i) => i + 1);

/** GET /healthz on a fresh TCP connection: the kernel picks the worker per connection. */
async function healthOverNewConnection(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  let text = "";
  for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
  return JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4));
}

Deno.test("deno serve --parallel: two workers share one chat, presence, history and ids", async () => {
  const port = freePort();
  const dir = Deno.makeTempDirSync({ prefix: "natter-parallel-" });
  const data = `${dir}/natter.db`;
  const server = new ServerProcess([
    "serve",
    "--parallel",
    "--allow-net",
    `--allow-read=${data}`,
    `--allow-write=${data}`,
    "--port",
    String(port),
    SERVE,
    "--data",
    data,
  ], { env: { DENO_JOBS: "2" } });
  const clients: Client[] = [];
  try {
    await until(
      () => /Listening on .* with 2 threads/.test(server.stdout + server.stderr),
      "both workers",
      20000,
    );
    assert.ok(!server.stderr.includes("history is per worker"), server.stderr);
    // Each worker says it is ready, and with which settings.
    await until(
      () =>
        (server.stdout.match(/natter \S+ worker ready settings="settings from --data/g) ?? [])
          .length === 2,
      "a ready line from each worker",
      10000,
    );
    // Each answer comes from one worker: its instance tag and its own connections.
    const seen = new Map<string, number>();
    const poll = async () => {
      for (let i = 0; i < 40; i++) {
        const body = await healthOverNewConnection(port);
        seen.set(body.bus.instance, body.connections);
      }
    };
    for (let i = 0; i < COUNT; i++) {
      clients.push(await Client.open(`ws://127.0.0.1:${port}/?name=u${i}&room=r`, "natter.v1"));
    }
    await sleep(200);
    await poll();
    assert.equal(seen.size, 2, `answers from two workers: ${JSON.stringify([...seen])}`);
    const counts = [...seen.values()];
    assert.equal(counts[0]! + counts[1]!, COUNT);
    assert.ok(counts.every((n) => n > 0), `clients on both workers: ${counts}`);

    for (const [i, client] of clients.entries()) {
      client.socket.send(JSON.stringify({ type: "say", text: `from u${i}`, ref: i }));
    }
    for (const client of clients) {
      await until(
        () => client.lines.filter((l) => l.includes('"type":"message"')).length >= COUNT,
        "every message at every client",
      );
      const ids = client.lines.filter((l) => l.includes('"type":"message"')).map((l) =>
        JSON.parse(l).id
      );
      assert.deepEqual(
        ids,
        ALL_IDS,
        `one id space, in order, no duplicates: ${client.lines.join("\n")}`,
      );
    }
    // Presence across workers: everyone is listed, whichever worker answers.
    clients[0]!.socket.send(JSON.stringify({ type: "who", ref: "w" }));
    const members = await clients[0]!.event("members", (e) => e.ref === "w");
    assert.deepEqual(
      (members.members as string[]).toSorted(),
      clients.map((_, i) => `u${i}`).toSorted(),
    );
    // History across workers: a newcomer (on either worker) gets them all.
    const late = await Client.open(`ws://127.0.0.1:${port}/?name=late&room=r`, "natter.v1");
    clients.push(late);
    const welcome = JSON.parse(late.lines.find((l) => l.includes('"welcome"'))!);
    assert.deepEqual(welcome.history.map((m: { id: number }) => m.id), ALL_IDS);
    assert.equal(welcome.count, COUNT + 1);
  } finally {
    // Connection ids never repeat across workers (each counts from 1, with a tag of its own).
    // A worker's log line can reach this process after its welcome reached the client.
    const connected = () =>
      [...server.stdout.matchAll(/connected id=(\S+)/g)].map((match) => match[1]);
    await until(() => connected().length >= COUNT + 1, "every connected line", 5000).catch(
      () => {},
    );
    const ids = connected();
    assert.equal(ids.length, COUNT + 1);
    assert.equal(new Set(ids).size, ids.length, `ids: ${ids}`);
    // A signal reaches one worker; both drain their clients (on both workers: above) and say so.
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0, server.stderr);
    assert.equal((server.stdout.match(/INFO {2}stopped/g) ?? []).length, 2, server.stdout);
    for (const client of clients) {
      assert.equal((await client.closed).code, 1001, "closed by natter, not cut off");
    }
    for (const client of clients) await client.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
