/** One suite, every store: the memory store and the SQLite store keep the same promises. */

import assert from "node:assert/strict";
import { type HistoryStore, type Retention, StoreReset } from "../lib/store/history.ts";
import { MemoryStore } from "../lib/store/memory.ts";
import { SqliteStore, StoreError } from "../lib/store/sqlite.ts";
import { DatabaseSync } from "node:sqlite";
import { RedisLink } from "../lib/store/redis_link.ts";
import { RedisStore } from "../lib/store/redis_store.ts";
import { SILENT } from "../lib/base/log.ts";
import { haveRedis, RedisServer } from "./redis_server.ts";

/** A store to test and how to get rid of it; a networked store may need to connect first. */
interface Made {
  store: HistoryStore;
  /** Releases the store and whatever it keeps (a file, a database's keys). */
  cleanup: () => Promise<void> | void;
}

type Factory = (retention?: Partial<Retention>) => Promise<Made> | Made;

const factories: Record<string, Factory> = {
  memory: (retention) => ({ store: new MemoryStore(retention), cleanup: () => {} }),
  sqlite: (retention) => {
    const dir = Deno.makeTempDirSync({ prefix: "natter-store-" });
    const store = new SqliteStore(`${dir}/natter.db`, retention);
    return { store, cleanup: () => (store.close(), Deno.removeSync(dir, { recursive: true })) };
  },
};

// The same promises from Redis, the store instances share (one server for the whole file).
const redis = haveRedis() ? await RedisServer.start() : undefined;
if (redis) {
  globalThis.addEventListener("unload", () => void redis.kill());
  factories.redis = async (retention) => {
    await redis.command("FLUSHALL");
    const link = await RedisLink.open(redis.url, SILENT);
    const store = await RedisStore.open(link, retention);
    return { store, cleanup: () => link.close() };
  };
}

const draft = (text: string, ts = 1000) => ({ ts, from: "alice", text });

for (const [kind, make] of Object.entries(factories)) {
  const test = (
    name: string,
    fn: (store: HistoryStore, clock: { now: number }) => Promise<void> | void,
    retention: Partial<Retention> = {},
  ) =>
    Deno.test(`${kind} store: ${name}`, async () => {
      const clock = { now: 10_000 };
      const { store, cleanup } = await make({ now: () => clock.now, ...retention });
      try {
        await fn(store, clock);
      } finally {
        await cleanup();
      }
    });

  test("ids start at 1 and grow by one per room", async (store) => {
    assert.deepEqual([
      (await store.append("a", draft("1"))).id,
      (await store.append("a", draft("2"))).id,
    ], [1, 2]);
    assert.equal((await store.append("b", draft("x"))).id, 1, "each room counts for itself");
    const { epoch: _e, ...stored } = await store.append("a", {
      ts: 5,
      from: "bob",
      text: "waves",
      action: true,
    });
    assert.deepEqual(stored, { room: "a", id: 3, ts: 5, from: "bob", text: "waves", action: true });
  });

  test("after() with a budget reads all that fits, and none of a backlog past it", async (store) => {
    const long = "é".repeat(4000); // 8000 bytes of UTF-8, 4000 code units
    for (let i = 0; i < 300; i++) await store.append("big", draft(`${i} ${long}`));
    const budget = 64 * 1024;
    const over = await store.after("big", 0, budget);
    assert.deepEqual(over, { messages: [], complete: false }, "300 x 4 KiB is past 64 KiB");
    const fits = await store.after("big", 295, budget);
    assert.deepEqual(fits.messages.map((m) => m.id), [296, 297, 298, 299, 300]);
    assert.equal(fits.complete, true);
    // Across pages: 150 short messages fit in one budget.
    for (let i = 0; i < 150; i++) await store.append("short", draft(`m${i}`));
    const all = await store.after("short", 0, budget);
    assert.deepEqual(all.messages.map((m) => m.id), Array.from({ length: 150 }, (_, i) => i + 1));
    assert.equal(all.complete, true);
    assert.deepEqual(await store.after("short", 0), all, "the same as without a budget");
    // Deleted messages go as tombstones: a backlog of deleted long ones fits.
    for (let i = 0; i < 40; i++) await store.append("spam", draft(`${i} ${long}`));
    for (let id = 1; id <= 40; id++) await store.remove!("spam", id);
    const stones = await store.after("spam", 0, budget);
    assert.equal(stones.messages.length, 40, "every tombstone");
    assert.equal(stones.complete, true);
  });

  test("a removed message reads back as its tombstone, in latest and after; an unknown id is none", async (store) => {
    for (const text of ["one", "two", "three"]) await store.append("a", draft(text));
    const gone = await store.remove!("a", 2);
    assert.deepEqual(gone, { room: "a", id: 2, ts: 1000, from: "alice", text: "", deleted: true });
    assert.equal(await store.remove!("a", 9), undefined);
    assert.equal(await store.remove!("nowhere", 1), undefined);
    const strip = (messages: { id: number; text: string; deleted?: true }[]) =>
      messages.map((m) => [m.id, m.text, m.deleted ?? false]);
    const all = [[1, "one", false], [2, "", true], [3, "three", false]];
    assert.deepEqual(strip(await store.latest("a", 10)), all);
    assert.deepEqual(strip(await store.latest("a", 2)), all.slice(1));
    assert.deepEqual(strip(await store.latest("a", 10, 3)), all.slice(0, 2));
    assert.deepEqual(strip((await store.after("a", 1)).messages), all.slice(1));
    assert.equal((await store.after("a", 1)).complete, true);
  });

  test("a message sent again with its key is the one stored the first time, not a new one", async (store) => {
    const first = await store.append("a", draft("hello"), "key-1");
    await store.append("a", draft("other"));
    const again = await store.append("a", draft("hello", 2000), "key-1");
    assert.equal(again.duplicate, true);
    assert.equal(again.id, first.id);
    assert.equal(again.ts, first.ts, "the stored message, not the resend");
    assert.equal(await store.head("a"), 2, "nothing new was stored");
    const elsewhere = await store.append("b", draft("hello"), "key-1");
    assert.equal(elsewhere.duplicate, undefined, "keys are per room");
    assert.equal(elsewhere.id, 1);
  });

  test("latest() returns the newest, oldest first, and pages back with before", async (store) => {
    for (let i = 1; i <= 10; i++) await store.append("r", draft(`m${i}`));
    assert.deepEqual((await store.latest("r", 3)).map((m) => m.text), ["m8", "m9", "m10"]);
    assert.deepEqual((await store.latest("r", 3, 8)).map((m) => m.id), [5, 6, 7]);
    assert.deepEqual((await store.latest("r", 3, 2)).map((m) => m.id), [1]);
    assert.deepEqual((await store.latest("r", 50)).length, 10);
    assert.deepEqual(await store.latest("nowhere", 5), []);
    const { epoch: _e, ...action } = await store.append("r", {
      ts: 1,
      from: "a",
      text: "x",
      action: true,
    });
    assert.deepEqual(await store.latest("r", 1), [action]);
  });

  test("after() returns exactly what came after an id", async (store) => {
    for (let i = 1; i <= 5; i++) await store.append("r", draft(`m${i}`));
    assert.deepEqual(await store.after("r", 2), {
      complete: true,
      messages: await store.latest("r", 3),
    });
    assert.deepEqual(await store.after("r", 5), { complete: true, messages: [] });
    assert.deepEqual((await store.after("r", 0)).messages.length, 5);
    assert.equal(
      (await store.after("r", 6)).complete,
      false,
      "an id from the future is from another store",
    );
    assert.equal((await store.after("empty", 0)).complete, true);
  });

  test("retention by count drops the oldest and never reuses ids", async (store) => {
    for (let i = 1; i <= 250; i++) await store.append("r", draft(`m${i}`));
    const kept = await store.latest("r", 1000);
    assert.equal(kept.length, 100);
    assert.equal(kept[0]!.id, 151);
    assert.deepEqual(await store.after("r", 150), { complete: true, messages: kept });
    assert.equal((await store.after("r", 149)).complete, false, "message 150 is gone");
    assert.equal(
      (await store.after("r", 149)).messages.length,
      100,
      "but what is kept still comes",
    );
    assert.equal((await store.append("r", draft("next"))).id, 251);
  }, { maxCount: 100 });

  test("retention by age hides and drops old messages", async (store, clock) => {
    await store.append("r", draft("old", 10_000));
    clock.now = 20_000;
    await store.append("r", draft("new", 20_000));
    clock.now = 71_000; // the first is now 61 s old, past the 60 s limit
    assert.deepEqual((await store.latest("r", 10)).map((m) => m.text), ["new"]);
    assert.equal((await store.after("r", 0)).complete, false);
    assert.equal((await store.append("r", draft("newer", 71_000))).id, 3);
  }, { maxAgeMs: 60_000 });

  test("head() is the last id given out, and keeps counting past retention", async (store) => {
    assert.equal(await store.head("r"), 0, "a room with no messages is at 0");
    assert.equal((await store.append("r", draft("m1"))).id, 1);
    assert.equal(await store.head("r"), 1);
    for (let i = 2; i <= 5; i++) await store.append("r", draft(`m${i}`));
    assert.equal(await store.head("r"), 5, "retention dropped messages, not their ids");
    assert.deepEqual((await store.latest("r", 10)).map((m) => m.id), [4, 5]);
    assert.equal(await store.head("other"), 0, "each room counts for itself");
    assert.equal((await store.append("r", draft("m6"))).id, 6);
    assert.equal(await store.head("r"), 6);
  }, { maxCount: 2 });

  test("epoch names the id space", (store) => {
    assert.equal(typeof store.epoch, "string");
    assert.ok(store.epoch.length >= 8);
  });
}

Deno.test({
  name:
    "redis store: a Redis that lost its scripts (SCRIPT FLUSH, a restart) is sent the script again",
  ignore: !redis,
  async fn() {
    await redis!.command("FLUSHALL");
    const link = await RedisLink.open(redis!.url, SILENT);
    try {
      const store = await RedisStore.open(link);
      assert.equal((await store.append("a", draft("1"))).id, 1);
      await redis!.command("SCRIPT", "FLUSH");
      assert.equal((await store.append("a", draft("2"))).id, 2);
      assert.equal((await store.append("a", draft("3"))).id, 3);
    } finally {
      await link.close();
    }
  },
});

/** Runs `fn` with stores on the test Redis, emptied first; closes their links after. */
async function withRedis(
  fn: (open: () => Promise<RedisStore>) => Promise<void>,
): Promise<void> {
  await redis!.command("FLUSHALL");
  const links: RedisLink[] = [];
  try {
    await fn(async () => {
      const link = await RedisLink.open(redis!.url, SILENT);
      links.push(link);
      return await RedisStore.open(link);
    });
  } finally {
    for (const link of links) await link.close();
  }
}

Deno.test({
  name:
    "redis store: rooms kept in the first key layout are renamed at start; epoch, ids, history and tombstones carry over",
  ignore: !redis,
  fn: () =>
    withRedis(async (open) => {
      await redis!.command("SET", "natter:epoch", "epoch-before");
      await redis!.command("SET", "natter:seq:old", "5");
      await redis!.command(
        "XADD",
        "natter:log:old",
        "5-0",
        "ts",
        "1000",
        "from",
        "alice",
        "text",
        "five",
        "action",
        "",
      );
      await redis!.command(
        "HSET",
        "natter:gone:old",
        "4",
        JSON.stringify({ ts: 900, from: "bob" }),
      );
      const store = await open();
      assert.equal(store.epoch, "epoch-before", "clients' positions stay valid");
      const kept = await store.latest("old", 10);
      assert.deepEqual(kept.map((m) => [m.id, m.text, m.deleted ?? false]), [
        [4, "", true],
        [5, "five", false],
      ]);
      assert.equal((await store.append("old", draft("six"))).id, 6);
      assert.match(await redis!.command("EXISTS", "natter:seq:old", "natter:log:old"), /^:0/);
      assert.match(await redis!.command("EXISTS", "natter:{old}:seq", "natter:{old}:log"), /^:2/);
    }),
});

Deno.test({
  name:
    "redis store: a room whose ids were given under an older epoch moves to the current one, and its ids go on",
  ignore: !redis,
  fn: () =>
    withRedis(async (open) => {
      const first = await open();
      assert.equal((await first.append("x", draft("1"))).id, 1);
      // Another instance started a new epoch (it saw a room go back in time).
      await redis!.command("SET", "natter:epoch", "epoch-2");
      const second = await open();
      const stored = await second.append("x", draft("2"));
      assert.deepEqual([stored.id, stored.epoch], [2, "epoch-2"]);
      // The first instance is refused until it moves to the new epoch too.
      await assert.rejects(() => Promise.resolve(first.append("x", draft("3"))), StoreReset);
      await first.refresh();
      assert.equal(first.epoch, "epoch-2");
      assert.equal((await first.append("x", draft("3"))).id, 3);
    }),
});

Deno.test({
  name:
    "redis store: a room whose last id fell below one this instance saw (a restored snapshot) starts a new epoch, for every instance",
  ignore: !redis,
  fn: () =>
    withRedis(async (open) => {
      const [writer, other] = [await open(), await open()];
      for (let i = 1; i <= 3; i++) await writer.append("x", draft(String(i)));
      const before = writer.epoch;
      // As a snapshot taken after the first message would have it.
      await redis!.command("DEL", "natter:{x}:log");
      await redis!.command(
        "XADD",
        "natter:{x}:log",
        "1-0",
        "ts",
        "1000",
        "from",
        "alice",
        "text",
        "1",
        "action",
        "",
      );
      await redis!.command("SET", "natter:{x}:seq", "1");
      await assert.rejects(() => Promise.resolve(writer.append("x", draft("4"))), StoreReset);
      await writer.refresh();
      assert.notEqual(writer.epoch, before);
      await other.refresh();
      assert.equal(other.epoch, writer.epoch);
      assert.equal((await writer.append("x", draft("again"))).id, 2);
    }),
});

Deno.test({
  name:
    "redis store: after a Redis emptied while it ran, an instance that has not noticed recovers nothing from the new space's ids, and re-reads the epoch",
  ignore: !redis,
  fn: () =>
    withRedis(async (open) => {
      const [stale, other] = [await open(), await open()];
      for (let i = 1; i <= 3; i++) await stale.append("x", draft(`old ${i}`));
      const before = stale.epoch;
      await redis!.command("FLUSHALL");
      // The other instance notices on its append and stores in a new epoch.
      await assert.rejects(() => Promise.resolve(other.append("x", draft("n"))), StoreReset);
      await other.refresh();
      for (let i = 1; i <= 5; i++) await other.append("x", draft(`new ${i}`));
      // `since` 2 is a position in the old space: the new ids 3-5 are not what came after it.
      const recovery = await stale.after("x", 2, 256 * 1024);
      assert.deepEqual(recovery, { messages: [], complete: false });
      const deadline = Date.now() + 5000;
      while (stale.epoch === before && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(stale.epoch, other.epoch, "it moved to the new epoch");
    }),
});

Deno.test({
  name:
    "redis store: after a new epoch, a quiet room (its own epoch key not yet moved) still recovers",
  ignore: !redis,
  fn: () =>
    withRedis(async (open) => {
      const store = await open();
      for (let i = 1; i <= 3; i++) await store.append("x", draft(`x${i}`));
      for (let i = 1; i <= 2; i++) await store.append("y", draft(`y${i}`));
      const before = store.epoch;
      // Room y went back in time (an older snapshot): the instance starts a new epoch.
      await redis!.command("SET", "natter:{y}:seq", "1");
      await store.refresh();
      assert.notEqual(store.epoch, before);
      // Room x has had no message since: its ids go on, and recovery in it still works.
      const recovery = await store.after("x", 1, 256 * 1024);
      assert.deepEqual(recovery.messages.map((m) => m.id), [2, 3]);
      assert.equal(recovery.complete, true);
      assert.equal((await store.after("x", 3)).complete, true);
    }),
});

Deno.test("memory store: a new store is a new epoch", () => {
  assert.notEqual(new MemoryStore().epoch, new MemoryStore().epoch);
});

Deno.test("sqlite store: reopening keeps the history, the epoch, and continues the ids", () => {
  const dir = Deno.makeTempDirSync({ prefix: "natter-store-" });
  try {
    const first = new SqliteStore(`${dir}/chat.db`);
    for (let i = 1; i <= 3; i++) first.append("r", draft(`m${i}`));
    const epoch = first.epoch;
    first.close();
    const second = new SqliteStore(`${dir}/chat.db`);
    assert.equal(second.epoch, epoch);
    assert.deepEqual(second.latest("r", 10).map((m) => m.text), ["m1", "m2", "m3"]);
    assert.equal(second.append("r", draft("m4")).id, 4);
    second.close();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("sqlite store: refuses a file that is not a natter database, saying so", () => {
  const dir = Deno.makeTempDirSync({ prefix: "natter-store-" });
  try {
    Deno.writeTextFileSync(
      `${dir}/notes.txt`,
      "just some text, not a database at all\n".repeat(20),
    );
    assert.throws(() => new SqliteStore(`${dir}/notes.txt`), StoreError);
    assert.throws(() => new SqliteStore(`${dir}/notes.txt`), /is not a natter database/);
    // Another application's SQLite database is left alone.
    const foreign = new DatabaseSync(`${dir}/app.db`);
    foreign.exec("CREATE TABLE users (name TEXT)");
    foreign.close();
    assert.throws(
      () => new SqliteStore(`${dir}/app.db`),
      /app\.db is not a natter database: it holds other data/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("memory store: a memory budget empties the least recently active rooms first, ids stay", () => {
  const store = new MemoryStore({}, 24_000);
  const line = "x".repeat(900); // ~920 bytes a message
  for (let i = 0; i < 10; i++) store.append("quiet", { ts: 1, from: "a", text: line });
  for (let i = 0; i < 15; i++) store.append("busy", { ts: 1, from: "a", text: line });
  assert.ok(store.bytes <= 24_000, `${store.bytes} bytes held`);
  assert.deepEqual(store.latest("quiet", 100), [], "the quiet room lost its messages");
  assert.equal(store.latest("busy", 100).length, 15, "the busy one kept them");
  assert.equal(store.after("quiet", 3).complete, false);
  assert.equal(
    store.append("quiet", { ts: 1, from: "a", text: "back" }).id,
    11,
    "ids are not reused",
  );
  for (let i = 0; i < 100; i++) store.append("flood", { ts: 1, from: "a", text: line });
  assert.ok(store.bytes <= 24_000, "even one room alone stays within budget");
  assert.ok(store.latest("flood", 1000).length > 0);
});

Deno.test("memory store: rooms that lost their messages and have no members are forgotten, ids never repeat", () => {
  const store = new MemoryStore({}, 100_000);
  store.hold("kept");
  assert.equal(store.head("kept"), 0);
  const seen = new Map<string, number>();
  for (let i = 0; i < 50_000; i++) {
    const room = `room-${i % 20_000}`; // each room comes back, after being forgotten
    const { id } = store.append(room, { ts: 1, from: "a", text: `hello ${i}` });
    assert.ok(id > (seen.get(room) ?? 0), `${room}: id ${id} after ${seen.get(room)}`);
    seen.set(room, id);
  }
  assert.ok(store.rooms < 200, `rooms known: ${store.rooms} (was one per name ever used)`);
  assert.ok(store.bytes <= 100_000, `${store.bytes}`);
  // A held room keeps its place through all that: its next id follows its head.
  const head = store.head("kept");
  assert.equal(store.append("kept", { ts: 1, from: "a", text: "x" }).id, head + 1);
  // A forgotten room: a client that saw something there learns it may have missed more.
  assert.equal(store.after("room-0", 5).complete, false);
  assert.deepEqual(store.after("never-seen", 0), { messages: [], complete: true });
  store.release("kept");
});

Deno.test("memory store: messages kept as bytes read back exactly, through many compactions and any script", () => {
  const store = new MemoryStore({ maxCount: 300 });
  const texts = [
    "plain",
    "ünïcödé",
    "漢字かな",
    "emoji 👋🏽 family 👨‍👩‍👧",
    "e\u0301 combining",
    "x".repeat(5000),
    "",
    // Long lines are encoded by the runtime, short ones in JavaScript: both kinds, any script.
    "漢字かな".repeat(30),
    "emoji 👋🏽 ".repeat(12),
    `${"a".repeat(60)}ü`,
  ];
  const names = ["alice", "Zoë", "名前", "bob-2"];
  const sent = [];
  for (let i = 0; i < 5000; i++) {
    const draft = {
      ts: 1_000 + i,
      from: names[i % names.length]!,
      text: `${texts[i % texts.length]!} #${i}`,
      ...(i % 5 === 0 ? { action: true as const } : {}),
    };
    sent.push({ room: "r", id: i + 1, ...draft });
    store.append("r", draft);
  }
  const kept = sent.slice(-300);
  assert.deepEqual(store.latest("r", 1000), kept, "the newest 300, exactly");
  assert.deepEqual(store.latest("r", 10, 4800), kept.filter((m) => m.id < 4800).slice(-10));
  assert.deepEqual(store.after("r", 4990), { messages: sent.slice(4990), complete: true });
  assert.equal(store.after("r", 10).complete, false, "what was dropped is reported missing");
  assert.equal(store.head("r"), 5000);
  const bytes = kept.reduce((sum, m) => sum + new TextEncoder().encode(m.from + m.text).length, 0);
  // The budget counts the arrays at their full size: at least what the messages take, at most
  // four times that and their slots (sized to twice what they hold, in powers of two).
  assert.ok(store.bytes >= bytes && store.bytes <= 4 * (bytes + 300 * 20) + 3072, `${store.bytes}`);
});

Deno.test("memory store: the budget bounds the memory held, in many small rooms and after long messages", () => {
  const many = new MemoryStore({}, 200_000);
  for (let i = 0; i < 5000; i++) many.append(`room-${i}`, { ts: 1, from: "a", text: `hello ${i}` });
  assert.ok(many.bytes <= 200_000, `${many.bytes} bytes counted for 5000 one-message rooms`);
  assert.equal(many.latest("room-4999", 10).length, 1, "the newest rooms keep theirs");
  assert.deepEqual(many.latest("room-0", 10), [], "the oldest lost theirs");
  const again = many.append("room-0", { ts: 1, from: "a", text: "again" }).id;
  assert.ok(again > 1, `ids are not reused: ${again}`);

  const store = new MemoryStore({ maxCount: 100 });
  for (let i = 0; i < 100; i++) store.append("r", { ts: 1, from: "a", text: "x".repeat(10_000) });
  const big = store.bytes;
  assert.ok(big >= 1_000_000, `${big}`);
  for (let i = 0; i < 100; i++) store.append("r", { ts: 1, from: "a", text: "short" });
  assert.ok(
    store.bytes < 16_384,
    `long messages gone, the room gives the memory back: ${store.bytes}`,
  );
  assert.deepEqual(store.latest("r", 1)[0]!.text, "short");
});

Deno.test("sqlite store: processes that open one new file at the same moment all get it", async () => {
  // The workers of `deno serve --parallel` do this at every start. Reads made before the busy
  // timeout was set failed at once while another process switched the file to WAL ("not a
  // natter database (database is locked)": 5 of 120 opens), and a process that read between
  // another's first table and its application id took the file for someone else's data.
  const store = new URL("../lib/store/sqlite.ts", import.meta.url).href;
  for (let round = 0; round < 8; round++) {
    const dir = Deno.makeTempDirSync({ prefix: "natter-race-" });
    try {
      const code = `import { SqliteStore } from "${store}";
        const s = new SqliteStore(${JSON.stringify(`${dir}/race.db`)});
        s.append("r", { ts: 1, from: "a", text: "b" });
        s.close();`;
      const opens = await Promise.all(
        Array.from(
          { length: 3 },
          () =>
            new Deno.Command(Deno.execPath(), { args: ["eval", code], stderr: "piped" }).output(),
        ),
      );
      for (const open of opens) {
        assert.ok(open.success, new TextDecoder().decode(open.stderr));
      }
      const ids = new SqliteStore(`${dir}/race.db`);
      assert.deepEqual(ids.latest("r", 10).map((m) => m.id), [1, 2, 3], "three messages, ids 1–3");
      ids.close();
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
});

Deno.test("memory store: a room keeping one or two messages does not resize its arrays on every one", () => {
  const Bytes = Uint8Array;
  let allocated = 0;
  // Counts the byte buffers the store allocates (new Uint8Array(size)).
  globalThis.Uint8Array = new Proxy(Bytes, {
    construct(target, args) {
      if (typeof args[0] === "number") allocated++;
      return Reflect.construct(target, args);
    },
  });
  try {
    for (const maxCount of [1, 2, 3]) {
      for (const length of [20, 100]) {
        allocated = 0;
        const store = new MemoryStore({ maxCount });
        for (let i = 0; i < 1000; i++) {
          store.append("r", { ts: 1, from: "alice", text: "x".repeat(length) });
        }
        assert.ok(
          allocated <= 4,
          `keeping ${maxCount}, ${length}-char lines: ${allocated} buffers`,
        );
      }
    }
  } finally {
    globalThis.Uint8Array = Bytes;
  }
});
