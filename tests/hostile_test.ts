/**
 * The hostile suite: a real natter process, attacked the ways people attack chat servers.
 * Each check asserts what a user would see (an error line, a close code, a server that
 * still answers) and can fail. Memory is read from /proc; loads stay on 127.0.0.1.
 */

import assert from "node:assert/strict";
import {
  Client,
  rawExchange,
  RawSocket,
  rssMiB,
  ServerProcess,
  sleep,
  startServer,
  until,
  upgradeRequest,
} from "./helpers.ts";

const TEXT = 0x1;

async function withServer(
  flags: string[],
  body: (server: ServerProcess, port: number) => Promise<void>,
) {
  const server = await ServerProcess.start(["--port", "0", "--hostname", "127.0.0.1", ...flags]);
  try {
    await body(server, await server.port());
  } finally {
    await server.stop("SIGKILL");
  }
}

/** The others still chat: a fresh pair exchanges a line. */
async function stillServes(port: number): Promise<void> {
  const a = await Client.open(`ws://127.0.0.1:${port}/?room=check&name=checker`);
  const b = await Client.open(`ws://127.0.0.1:${port}/?room=check&name=witness`);
  try {
    a.send("still there?");
    await b.next((line) => line === "checker: still there?");
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

Deno.test("hostile: an oversized message gets an error; a huge one closes with 1009; others carry on", async () => {
  await withServer(["--quiet"], async (_server, port) => {
    const url = `ws://127.0.0.1:${port}/`;
    const big = await Client.open(url);
    try {
      big.send("x".repeat(20 * 1024));
      assert.match(
        await big.next((line) => line.startsWith("!")),
        /^! message is over 16384 bytes$/,
      );
      big.send("small again");
      big.send("y".repeat(2 * 1024 * 1024));
      assert.equal((await big.closed).code, 1009);
      await stillServes(port);
    } finally {
      await big.close();
    }
  });
});

Deno.test("hostile: a flood is refused with errors, then closed with 1008; others' messages still flow", async () => {
  await withServer(["--quiet"], async (_server, port) => {
    const flooder = await Client.open(`ws://127.0.0.1:${port}/?name=flooder`);
    const alice = await Client.open(`ws://127.0.0.1:${port}/?name=alice`);
    const bob = await Client.open(`ws://127.0.0.1:${port}/?name=bob`);
    try {
      const flood = (async () => {
        for (let i = 0; i < 3000 && flooder.socket.readyState === WebSocket.OPEN; i++) {
          flooder.send(`spam ${i}`);
          if (i % 100 === 0) await sleep(0);
        }
      })();
      // While it floods, alice and bob keep talking at a human pace, and get through promptly.
      const delays: number[] = [];
      for (let i = 0; i < 10; i++) {
        const sent = performance.now();
        alice.send(`hello ${i}`);
        await bob.next((line) => line === `alice: hello ${i}`);
        delays.push(performance.now() - sent);
        await sleep(20);
      }
      await flood;
      // The flooder is cut off. Deno 2.9 drops the close frame when the peer is still sending
      // (docs/PROTOCOL.md), so a flooder mid-stream sees 1006; the server records 1008.
      await flooder.closed;
      assert.ok(flooder.lines.some((line) => line.startsWith("! slow down")), "it was told first");
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^natter_closes_total\{reason="rate_limited"\} 1$/m);
      const spam = bob.lines.filter((line) => line.startsWith("flooder: spam"));
      assert.ok(spam.length <= 20, `at most the burst got through, not ${spam.length}`);
      assert.ok(
        Math.max(...delays) < 1000,
        `alice's lines reached bob in ${delays.map(Math.round)} ms`,
      );
    } finally {
      await Promise.all([flooder.close(), alice.close(), bob.close()]);
    }
  });
});

Deno.test("hostile: a client that bursts past the limit and then listens is closed with 1008", async () => {
  await withServer(["--quiet"], async (_server, port) => {
    const raw = await RawSocket.open(port);
    // The burst (20), then as many refusals as the patience allows (20), then one more.
    for (let i = 0; i < 41; i++) await raw.send(TEXT, new TextEncoder().encode(`burst ${i}`));
    const { code } = await raw.readUntilClosed(2000);
    raw.close();
    assert.equal(code, 1008);
  });
});

Deno.test("hostile: a client that never reads is dropped as too slow and memory stays bounded", async () => {
  // Keep history small: this measures the slow-consumer cap, not what history retains.
  const flags = ["--quiet", "--rate", "100000", "--rate-burst", "100000", "--history-limit", "10"];
  await withServer(flags, async (server, port) => {
    const pid = server.child.pid;
    const stuck = await RawSocket.open(port, "/?name=stuck"); // never reads again
    const sender = await Client.open(`ws://127.0.0.1:${port}/?name=sender`);
    const reader = await Client.open(`ws://127.0.0.1:${port}/?name=reader`);
    try {
      await sleep(200);
      const baseline = rssMiB(pid);
      let peak = baseline;
      const sampler = setInterval(() => peak = Math.max(peak, rssMiB(pid)), 50);
      // 96 MiB of chat in 16 KiB lines: without the cap the stuck client would hold most of it.
      const line = "z".repeat(16 * 1024 - 100);
      const count = 6000;
      try {
        for (let i = 0; i < count; i++) {
          sender.send(`${i} ${line}`);
          if (i % 10 === 0) {
            await until(
              () => reader.lines.length >= i - 20,
              `the reader to keep up (state ${reader.socket.readyState}, ${reader.lines.length} lines, last ${
                reader.lines.at(-1)?.slice(0, 40)
              })`,
              20_000,
            );
          }
        }
        await until(
          () => reader.lines.some((l) => l.startsWith(`sender: ${count - 1} `)),
          "the last line",
          30_000,
        );
      } finally {
        clearInterval(sampler);
      }
      await reader.next((l) => l === "* stuck left");
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^natter_slow_consumers_total 1$/m);
      assert.match(metrics, /^natter_connections 2$/m, "the stuck client is out of the hub");
      const growth = peak - baseline;
      console.log(
        `RSS baseline ${baseline.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB, growth ${
          growth.toFixed(1)
        } MiB`,
      );
      assert.ok(
        growth < 50,
        `server memory grew by ${growth.toFixed(1)} MiB while 96 MiB went past a stuck client`,
      );
      await stillServes(port);
    } finally {
      stuck.close();
      await Promise.all([sender.close(), reader.close()]);
    }
  });
});

Deno.test("hostile: a burst from several senders does not get readers who keep up dropped as slow", async () => {
  await withServer(["--quiet"], async (_server, port) => {
    const url = (name: string) => `ws://127.0.0.1:${port}/?room=b&name=${name}`;
    const readers = await Promise.all([
      Client.json(url("r1")),
      Client.json(url("r2")),
      Client.open(url("r3")),
    ]);
    const senders = await Promise.all(
      Array.from({ length: 6 }, (_, i) => Client.open(url(`s${i}`))),
    );
    try {
      // 6 x 20 lines of 16000 quotes: within every limit, about 2 MB per reader at once.
      for (const sender of senders) for (let i = 0; i < 20; i++) sender.send('"'.repeat(16000));
      for (const reader of readers) {
        await until(
          () =>
            reader.lines.filter((line) => line.includes('"type":"message"') || /^s\d: "/.test(line))
              .length === 120,
          "all 120 lines at every reader",
          15_000,
        );
        assert.equal(reader.socket.readyState, WebSocket.OPEN);
      }
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^natter_slow_consumers_total 0$/m);
    } finally {
      await Promise.all([...readers, ...senders].map((client) => client.close()));
    }
  });
});

Deno.test("hostile: a peer that stops answering pings is dropped after --idle-timeout", async () => {
  await withServer(["--quiet", "--idle-timeout", "1"], async (_server, port) => {
    const watcher = await Client.open(`ws://127.0.0.1:${port}/?name=watcher`);
    const dead = await RawSocket.open(port, "/?name=dead"); // reads nothing, answers nothing
    try {
      await watcher.next((line) => line === "* dead joined");
      const started = performance.now();
      await watcher.next((line) => line === "* dead left", 6000);
      const seconds = (performance.now() - started) / 1000;
      assert.ok(seconds < 4, `dropped after ${seconds.toFixed(1)} s`);
    } finally {
      dead.close();
      await watcher.close();
    }
  });
});

Deno.test("hostile: invalid UTF-8 in a text frame drops that connection and nobody else", async () => {
  await withServer(["--quiet"], async (_server, port) => {
    const raw = await RawSocket.open(port);
    await raw.send(TEXT, new Uint8Array([0x68, 0x69, 0xff, 0xfe]));
    // Deno drops such a connection at once, without a close frame (the client sees 1006).
    const started = performance.now();
    const { ended } = await raw.readUntilClosed(3000);
    raw.close();
    assert.ok(ended, "the server ended the connection");
    assert.ok(performance.now() - started < 2000);
    await stillServes(port);
  });
});

Deno.test("hostile: malformed upgrades, foreign origins and bad tokens are refused before any socket", async () => {
  await withServer(["--token", "sesame-open-up", "--log", "json"], async (server, port) => {
    const code = async (request: string) =>
      Number(/^HTTP\/1\.1 (\d{3})/.exec(await rawExchange(port, request))?.[1]);
    assert.equal(
      await code(upgradeRequest("/?token=sesame-open-up", { "sec-websocket-key": null })),
      400,
    );
    assert.equal(
      await code(upgradeRequest("/?token=sesame-open-up", { "sec-websocket-version": "12" })),
      426,
    );
    assert.equal(
      await code(upgradeRequest("/?token=sesame-open-up", { origin: "https://evil.example" })),
      403,
    );
    assert.equal(await code(upgradeRequest("/?token=guess-guess-guess")), 401);
    assert.equal(await code(upgradeRequest("/")), 401);
    assert.equal(await code("NOT HTTP AT ALL\r\n\r\n"), 400);
    assert.equal(await code(upgradeRequest("/?token=sesame-open-up")), 101);
    // Every attempt was logged, and no token — right or wrong — appears in the logs.
    await until(
      () => server.stdout.includes('"msg":"connected"'),
      "the log of the accepted upgrade",
    );
    const log = server.stdout + server.stderr;
    assert.match(log, /"msg":"upgrade refused","reason":"token","status":401/);
    assert.ok(
      !log.includes("sesame") && !log.includes("guess-guess"),
      "tokens never appear in logs",
    );
  });
});

Deno.test("hostile: thousands of connect/disconnect cycles grow memory no more than a bare server", async () => {
  // RSS never returns to its first value, even for a bare Deno.serve + Set server: the native
  // allocator keeps its arenas. So natter is measured against that reference, cycle for cycle.
  const REFERENCE = new URL("../bench/reference.ts", import.meta.url).pathname;
  const growth = async (server: ServerProcess) => {
    const port = await server.port();
    const pid = server.child.pid;
    const cycle = async (n: number) => {
      for (let i = 0; i < n; i += 50) {
        const batch = Array.from(
          { length: 50 },
          () => Client.open(`ws://127.0.0.1:${port}/?room=churn`, undefined, { welcomed: false }),
        );
        const clients = await Promise.all(batch);
        await Promise.all(clients.map((client) => client.close()));
      }
    };
    try {
      // Warm up: JIT and pools (the node:http layer of natter's listener fills its pools over the
      // first few thousand connections; from then on it grows no faster than the reference).
      await cycle(6000);
      await sleep(300);
      const before = rssMiB(pid);
      await cycle(6000);
      await sleep(300);
      return { before, after: rssMiB(pid) };
    } finally {
      await server.stop("SIGKILL");
    }
  };
  const natterServer = await ServerProcess.start([
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--quiet",
  ]);
  const natter = await growth(natterServer);
  const reference = await growth(await ServerProcess.start(["--port", "0"], REFERENCE));
  const natterGrowth = natter.after - natter.before;
  const referenceGrowth = reference.after - reference.before;
  console.log(
    `RSS over 6000 cycles: natter ${natter.before.toFixed(1)} -> ${natter.after.toFixed(1)} MiB, ` +
      `reference ${reference.before.toFixed(1)} -> ${reference.after.toFixed(1)} MiB`,
  );
  // Coarse by nature (allocator noise is several MiB); the heap test below is the precise one.
  assert.ok(
    natterGrowth < referenceGrowth * 1.5 + 10,
    `natter grew ${natterGrowth.toFixed(1)} MiB, the reference ${referenceGrowth.toFixed(1)} MiB`,
  );
});

Deno.test("hostile: connection churn leaves natter's JS heap where it was (after GC)", async () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("run with --v8-flags=--expose-gc (deno task test does)");
  const server = startServer();
  const cycle = async (n: number) => {
    for (let i = 0; i < n; i += 50) {
      const batch = Array.from({ length: 50 }, () => Client.open(server.ws("/?room=churn")));
      const clients = await Promise.all(batch);
      await Promise.all(clients.map((client) => client.close()));
    }
  };
  const heap = async () => {
    await sleep(100);
    gc();
    return Deno.memoryUsage().heapUsed / 1024 / 1024;
  };
  try {
    await cycle(500);
    const before = await heap();
    await cycle(3000);
    const after = await heap();
    console.log(
      `JS heap after GC: ${before.toFixed(2)} MiB before 3000 cycles, ${
        after.toFixed(2)
      } MiB after`,
    );
    assert.equal(server.app.hub.connections, 0);
    // A leak of 300 bytes per connection (one small object) would add 0.9 MiB.
    assert.ok(after - before < 0.5, `the heap grew by ${(after - before).toFixed(2)} MiB`);
  } finally {
    await server.close();
  }
});

/**
 * A natter process with a client that never reads and whose buffers are full, so that its
 * closing handshake cannot finish: shutdown has to get past it.
 */
async function serverWithStuckClient() {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--rate",
    "100000",
    "--history",
    "0",
  ]);
  const port = await server.port();
  const stuck = await RawSocket.open(port, "/?name=stuck");
  const sender = await Client.open(`ws://127.0.0.1:${port}/?name=t`);
  return { server, port, stuck, sender };
}

/** Sends 3 MiB, paced so that clients that do read keep up. */
async function fillStuckClient(sender: Client): Promise<void> {
  for (let i = 0; i < 200; i++) {
    sender.send("w".repeat(16000));
    if (i % 10 === 0) await sleep(5);
  }
  await sleep(300);
}

Deno.test("hostile: SIGTERM tells clients, closes them with 1001 and exits 0 — even with a stuck client", async () => {
  const { server, port, stuck, sender: text } = await serverWithStuckClient();
  // The filler gets none of its own lines back (plain text), so only the stuck client fills up;
  // the JSON client joins afterwards, so that a loaded machine cannot make it look slow too.
  await fillStuckClient(text);
  const json = await Client.json(`ws://127.0.0.1:${port}/?name=j`);
  try {
    const started = performance.now();
    const status = await server.stop("SIGTERM");
    const seconds = (performance.now() - started) / 1000;
    assert.equal(status.code, 0);
    assert.ok(seconds < 5, `exited in ${seconds.toFixed(1)} s`);
    const closed = await text.closed;
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, "server shutting down");
    assert.ok(
      text.lines.includes("* server is shutting down; reconnect in a moment"),
      text.lines.at(-1),
    );
    assert.equal((await json.closed).code, 1001);
    assert.ok(
      json.lines.some((line) => line.includes('"type":"notice"') && line.includes("shutting down")),
    );
    assert.match(server.stdout, /shutting down/);
  } finally {
    stuck.close();
    await Promise.all([text.close(), json.close()]);
  }
});

Deno.test("hostile: a second signal exits at once; two at once (deno task passing Ctrl+C on) are one", async () => {
  const { server, stuck, sender } = await serverWithStuckClient();
  try {
    await fillStuckClient(sender);
    server.child.kill("SIGTERM");
    server.child.kill("SIGINT"); // the same press, forwarded by deno task: still draining
    await sleep(1200);
    assert.doesNotMatch(server.stdout + server.stderr, /second signal/);
    const started = performance.now();
    const status = await server.stop("SIGINT");
    assert.equal(status.code, 130);
    assert.ok(performance.now() - started < 1000);
  } finally {
    stuck.close();
    await sender.close();
  }
});
