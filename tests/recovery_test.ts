/**
 * Recovery and persistence, end to end: a client that drops mid-stream gets exactly what it
 * missed; a server killed with -9 comes back with the same history and continues the ids.
 */

import assert from "node:assert/strict";
import { Client, run, ServerProcess, sleep, startServer, until } from "./helpers.ts";
import { MAIN } from "./helpers.ts";

interface Seen {
  id: number;
  text: string;
}

/** Message events in a JSON client's lines: from welcomes' history and live messages. */
function messagesOf(client: Client): Seen[] {
  const seen: Seen[] = [];
  for (const line of client.lines) {
    const event = JSON.parse(line);
    if (event.type === "welcome") seen.push(...event.history);
    if (event.type === "message") seen.push(event);
  }
  return seen.map(({ id, text }) => ({ id, text }));
}

Deno.test("recovery: a client that drops mid-stream and comes back with since= misses nothing and sees nothing twice", async () => {
  const server = startServer({ rateBurst: 100_000, ratePerSecond: 100_000, history: 0 });
  const sender = await Client.open(server.ws("/?room=r&name=sender"));
  let first = await Client.json(server.ws("/?room=r&name=reader"));
  const total = 300;
  let sent = 0;
  const sending = (async () => {
    for (; sent < total; sent++) {
      sender.send(`line ${sent + 1}`);
      if (sent % 5 === 0) await sleep(1);
    }
  })();
  try {
    await until(() => messagesOf(first).length >= 80, "the reader to see 80 messages", 10_000);
    await first.close(); // the phone goes into a tunnel
    const before = messagesOf(first);
    const lastSeen = before.at(-1)!.id;
    await until(() => sent >= 200, "the sender to go on for a while");
    const second = await Client.json(server.ws(`/?room=r&name=reader&since=${lastSeen}`));
    first = second;
    await sending;
    await until(() => messagesOf(second).at(-1)?.text === `line ${total}`, "the last line", 10_000);
    const welcome = JSON.parse(second.lines[0]!);
    assert.equal(welcome.recovered, true);
    assert.ok(welcome.history.length > 0, "some arrived through recovery");
    const after = messagesOf(second);
    const union = [...before, ...after];
    assert.deepEqual(union.map((m) => m.id), Array.from({ length: total }, (_, i) => i + 1));
    assert.deepEqual(
      union.map((m) => m.text),
      Array.from({ length: total }, (_, i) => `line ${i + 1}`),
    );
  } finally {
    await sending;
    await Promise.all([sender.close(), first.close()]);
    await server.close();
  }
});

Deno.test("recovery: when the missed messages are gone, the welcome says so and brings the latest", async () => {
  const server = startServer({ rateBurst: 1000, ratePerSecond: 1000, historyLimit: 5, history: 3 });
  const sender = await Client.json(server.ws("/?name=s"));
  try {
    for (let i = 1; i <= 20; i++) sender.send({ type: "say", text: `m${i}` });
    await until(() => messagesOf(sender).length === 20, "20 acknowledgements");
    const late = await Client.json(server.ws("/?name=late&since=2"));
    const welcome = JSON.parse(late.lines[0]!);
    assert.equal(welcome.recovered, false);
    assert.deepEqual(welcome.history.map((m: Seen) => m.text), ["m18", "m19", "m20"]);
    await late.close();
  } finally {
    await sender.close();
    await server.close();
  }
});

Deno.test("persistence: after kill -9, a restart serves the same history and continues the ids", async () => {
  const dir = await Deno.makeTempDir({ prefix: "natter-data-" });
  const data = `${dir}/natter.db`;
  const flags = [
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--data",
    data,
    "--rate",
    "1000",
    "--rate-burst",
    "1000",
    "--quiet",
  ];
  const permissions = ["--allow-net", `--allow-read=${dir}`, `--allow-write=${dir}`];
  try {
    const first = await ServerProcess.start(flags, MAIN, permissions);
    const port = await first.port();
    const author = await Client.json(`ws://127.0.0.1:${port}/?room=keep&name=author`);
    for (let i = 1; i <= 25; i++) author.send({ type: "say", text: `kept ${i}`, ref: i });
    // Every acknowledgement means "stored": wait for all 25, then pull the plug.
    await until(() => messagesOf(author).length === 25, "25 acknowledgements");
    const acknowledged = messagesOf(author);
    const epoch = JSON.parse(author.lines[0]!).epoch;
    const killed = await first.stop("SIGKILL");
    assert.equal(killed.signal, "SIGKILL");
    await author.closed;

    const second = await ServerProcess.start(flags, MAIN, permissions);
    try {
      const reader = await Client.json(
        `ws://127.0.0.1:${await second.port()}/?room=keep&name=reader`,
      );
      const welcome = JSON.parse(reader.lines[0]!);
      assert.equal(welcome.epoch, epoch, "the same id space after the crash");
      assert.deepEqual(
        welcome.history.map((m: Seen) => ({ id: m.id, text: m.text })),
        acknowledged,
      );
      reader.send({ type: "say", text: "after the crash", ref: "n" });
      const next = await reader.event("message", (event) => event.ref === "n");
      assert.equal(next.id, 26, "ids continue, never reused");
      await reader.close();
    } finally {
      await second.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("persistence: a file that is not a natter database, or one without permission, fails at start", async () => {
  const dir = await Deno.makeTempDir({ prefix: "natter-data-" });
  try {
    await Deno.writeTextFile(`${dir}/notes.txt`, "shopping list: milk, eggs, bread\n".repeat(50));
    const foreign = await run([
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      MAIN,
      "--data",
      `${dir}/notes.txt`,
      "--port",
      "0",
    ]);
    assert.equal(foreign.code, 1);
    assert.match(
      foreign.stderr,
      /natter: cannot use --data: .*notes\.txt is not a natter database/,
    );
    const denied = await run([
      "run",
      "--allow-net",
      MAIN,
      "--port",
      "0",
      "--data",
      `${dir}/chat.db`,
    ]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /cannot open .*chat\.db: no permission\. Run with --allow-read=/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
