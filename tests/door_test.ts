/**
 * "Hold the door": a real natter process, attacked from the network with cheap tricks that
 * used to lock it out, kill it or pin its memory. After each attack a new client connects and
 * chats within 10 s, and the process is still running. Attackers use 127.0.0.2 and up, so a
 * bystander on 127.0.0.1 shows who is still served while an attack runs.
 */

import assert from "node:assert/strict";
import {
  abortedHandshakes,
  closedByServer,
  connectFrom,
  FragmentHolder,
  openFiles,
  unsentSockets,
} from "./attack.ts";
import { Client, MAIN, RawSocket, rssMiB, ServerProcess, sleep, until } from "./helpers.ts";
import type net from "node:net";

async function withServer(
  flags: string[],
  body: (server: ServerProcess, port: number) => Promise<void>,
  ulimit?: number,
) {
  const args = ["--port", "0", "--hostname", "127.0.0.1", ...flags];
  const server = ulimit === undefined ? await ServerProcess.start(args) : new ServerProcess(
    ["-c", `ulimit -n ${ulimit} && exec "$0" run --allow-net "$@"`, Deno.execPath(), MAIN, ...args],
    { executable: "sh" },
  );
  try {
    await body(server, await server.port());
    assert.equal(await exited(server), false, `natter exited: ${server.stderr}`);
  } catch (error) {
    throw new Error(`${error}\n--- natter's log:\n${server.stderr}`);
  } finally {
    await server.stop("SIGKILL");
  }
}

/** Whether the process has ended (without waiting for it). */
async function exited(server: ServerProcess): Promise<boolean> {
  const status = await Promise.race([server.child.status, sleep(50).then(() => undefined)]);
  return status !== undefined;
}

/** A fresh pair chats within `ms`; throws what went wrong otherwise. */
async function chatsWithin(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const a = await Client.open(`ws://127.0.0.1:${port}/?room=check&name=checker`);
      const b = await Client.open(`ws://127.0.0.1:${port}/?room=check&name=witness`);
      try {
        a.send("still there?");
        await b.next((line) => line === "checker: still there?");
        return;
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    } catch (error) {
      last = error;
      await sleep(250);
    }
  }
  throw new Error(`no chat within ${ms} ms: ${last}`);
}

async function health(port: number): Promise<Record<string, unknown>> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return await response.json();
}

Deno.test("door: 3000 handshakes reset before the 101 do not lock anyone out or keep descriptors", async () => {
  await withServer(["--max-connections", "100"], async (server, port) => {
    const before = openFiles(server.child.pid);
    // Spread over addresses, so that no per-address cap is what saves the day.
    const sent = (await Promise.all(
      [2, 3, 4, 5, 6].map((a) => abortedHandshakes(port, 600, `127.0.0.${a}`)),
    )).reduce((sum, n) => sum + n, 0);
    assert.ok(sent > 2500, `only ${sent} handshakes went out`);
    await chatsWithin(port, 10_000);
    await until(() => openFiles(server.child.pid) < before + 20, "descriptors released", 12_000);
    const status = await health(port);
    assert.equal(status.connections, 0);
  });
});

Deno.test("door: a client's close completes at once, and the room hears it left", async () => {
  await withServer([], async (_server, port) => {
    const alice = await Client.open(`ws://127.0.0.1:${port}/?room=r&name=alice`);
    for (let i = 0; i < 4; i++) {
      // Half of them close before their welcome has even arrived.
      const bob = await Client.open(`ws://127.0.0.1:${port}/?room=r&name=bob`, undefined, {
        welcomed: i % 2 === 0,
      });
      const started = performance.now();
      await bob.close();
      // The runtime kept the descriptor (and Deno's client waited 15 s) while the node
      // socket's handle stayed open.
      assert.ok(performance.now() - started < 2000, `close took ${performance.now() - started} ms`);
      await alice.next((line) => line === "* bob left", 2000);
    }
    await alice.close();
  });
});

Deno.test("door: connections that never finish their request head are closed after --header-timeout", async () => {
  await withServer(["--header-timeout", "2"], async (_server, port) => {
    const silent: net.Socket[] = [];
    const half: net.Socket[] = [];
    for (let i = 0; i < 20; i++) silent.push(await connectFrom(port, "127.0.0.2"));
    for (let i = 0; i < 20; i++) {
      const socket = await connectFrom(port, "127.0.0.3");
      socket.write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
      half.push(socket);
    }
    // One whose request could not be served (a Host no URL can hold), then trickles bytes.
    const bad = await connectFrom(port, "127.0.0.4");
    bad.write("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\nGET / HTTP/1.1\r\nX-Slow: ");
    const trickle = setInterval(() => bad.writable && bad.write("x"), 500);
    const closed = await Promise.all(
      [...silent, ...half, bad].map((s) => closedByServer(s, 4000)),
    );
    clearInterval(trickle);
    assert.equal(closed.filter(Boolean).length, 41, "every slow connection was closed");
    await chatsWithin(port, 2000);
  });
});

Deno.test("door: running out of descriptors (ulimit -n 256) neither ends natter nor stops its chat", async () => {
  await withServer([], async (server, port) => {
    // Two clients chat before, during and after the attack.
    const alice = await Client.open(`ws://127.0.0.1:${port}/?room=main&name=alice`);
    const bob = await Client.open(`ws://127.0.0.1:${port}/?room=main&name=bob`);
    const held: net.Socket[] = [];
    try {
      // From one address: its excess is closed at once, and 127.0.0.1 is still served.
      for (let i = 0; i < 150; i++) {
        held.push(await connectFrom(port, "127.0.0.2").catch(() => null) as net.Socket);
      }
      await chatsWithin(port, 5000);
      // From many addresses at once, past the descriptor limit.
      const many = await Promise.all(
        Array.from({ length: 8 }, (_, a) =>
          Promise.all(
            Array.from(
              { length: 60 },
              () => connectFrom(port, `127.0.0.${3 + a}`).catch(() => null),
            ),
          )),
      );
      for (const group of many) for (const socket of group) if (socket) held.push(socket);
      alice.send("during the attack");
      await bob.next((line) => line === "alice: during the attack", 5000);
      assert.equal(await exited(server), false, `natter exited: ${server.stderr}`);
    } finally {
      for (const socket of held) socket?.destroy();
    }
    await chatsWithin(port, 10_000);
    alice.send("after the attack");
    await bob.next((line) => line === "alice: after the attack", 5000);
    await Promise.all([alice.close(), bob.close()]);
  }, 256);
});

Deno.test("door: past --max-memory (unfinished fragmented messages), new connections get 503, chat goes on, memory returns when the holders leave", async () => {
  await withServer(["--max-memory", "160MiB", "--idle-timeout", "4"], async (server, port) => {
    const alice = await Client.open(`ws://127.0.0.1:${port}/?room=main&name=alice`);
    const bob = await Client.open(`ws://127.0.0.1:${port}/?room=main&name=bob`);
    const base = rssMiB(server.child.pid);
    // Each holder makes the runtime buffer ~32 MiB that natter never sees.
    const holders: FragmentHolder[] = [];
    for (let i = 0; i < 3; i++) holders.push(await FragmentHolder.open(port));
    await Promise.all(holders.map((h) => h.hold(32)));
    await until(() => rssMiB(server.child.pid) > 160, "the attack to pass the budget", 10_000);
    // Over budget: new connections are refused, so no further holder gets in ...
    let status: Record<string, unknown> = {};
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      status = await health(port);
      if ((status.memory as { over: boolean }).over) break;
      await sleep(200);
    }
    assert.deepEqual((status.memory as { over: boolean }).over, true, JSON.stringify(status));
    assert.deepEqual(status.problems, ["memory"]);
    const late = await FragmentHolder.open(port);
    await until(() => late.events.length > 0 || late.ended, "an answer to the late upgrade");
    assert.match(late.events[0] ?? "", /^HTTP\/1.1 503/);
    late.close();
    // ... and those already in keep chatting.
    alice.send("over budget");
    await bob.next((line) => line === "alice: over budget", 3000);
    // The holders leave; the runtime notices at the next unanswered ping (--idle-timeout).
    for (const holder of holders) holder.close();
    await until(
      () => rssMiB(server.child.pid) < 160 * 0.9,
      `memory back under the budget (was ${base.toFixed(0)} MiB before)`,
      15_000,
    );
    await chatsWithin(port, 10_000);
    await Promise.all([alice.close(), bob.close()]);
  });
});

Deno.test("door: readers dropped as too slow keep their slots while the kernel holds their data", async () => {
  const cap = 8;
  await withServer(
    [
      "--max-connections",
      `${cap}`,
      "--max-buffered",
      "64KiB",
      "--rate",
      "1000",
      "--rate-burst",
      "1000",
    ],
    async (_server, port) => {
      const talker = await Client.open(`ws://127.0.0.1:${port}/?room=busy&name=talker`);
      const line = "x".repeat(8000);
      let talking = true;
      const talk = (async () => {
        while (talking) {
          // 800 a second, under the --rate given: 6.4 MB/s for each reader.
          for (let i = 0; i < 40 && talker.socket.readyState === WebSocket.OPEN; i++) {
            talker.send(line);
          }
          await sleep(50);
        }
      })();
      const stuck: RawSocket[] = [];
      let refused = 0;
      let peak = 0;
      try {
        // Readers that never read; once dropped as too slow, each shuts its sending side, so
        // that the server's socket closes while the kernel still holds its unsent data.
        for (let i = 0; i < 24; i++) {
          try {
            const reader = await RawSocket.open(port, "/?room=busy");
            stuck.push(reader);
            setTimeout(() => reader.conn.closeWrite().catch(() => {}), 2500);
          } catch (error) {
            assert.match(String(error), /503/);
            refused++;
          }
          await sleep(400);
          peak = Math.max(peak, unsentSockets(port));
        }
      } finally {
        talking = false;
        await talk;
        for (const socket of stuck) socket.close();
        await talker.close();
      }
      assert.ok(refused > 0, "readers were refused while dropped ones kept their slots");
      assert.ok(peak <= cap, `${peak} sockets held unsent data at once, over --max-connections`);
    },
  );
});

Deno.test("door: a client that pipelines requests and never reads the answers is closed before it can grow the process", async () => {
  await withServer([], async (server, port) => {
    const base = rssMiB(server.child.pid);
    // 20,000 requests for the page in one go (700 KB), on a socket that reads nothing.
    const socket = await connectFrom(port, "127.0.0.2");
    const request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    socket.write(request.repeat(20_000));
    // The server closes it (the one open connection left is the check's own).
    await until(
      async () => {
        const tcp = (await health(port)).tcp as { open: number };
        return tcp.open === 1;
      },
      "the pipelining connection closed",
      5000,
    );
    const grown = rssMiB(server.child.pid) - base;
    assert.ok(grown < 64, `the process grew by ${grown.toFixed(0)} MiB`);
    socket.destroy();
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^natter_refused_total\{reason="unanswered"\} 1$/m, "one refusal");
    // Pipelining within reason is still served: 10 requests in one write, 10 answers.
    const polite = await connectFrom(port, "127.0.0.3");
    let answers = 0;
    polite.on("data", (chunk: Uint8Array) => {
      answers += new TextDecoder().decode(chunk).split("HTTP/1.1 200").length - 1;
    });
    polite.write(request.repeat(10));
    await until(() => answers === 10, "10 answers to 10 pipelined requests");
    // And a keep-alive connection asks one request after another, as long as it likes.
    for (let i = 0; i < 100; i++) {
      polite.write(request);
      await until(() => answers === 11 + i, `answer ${11 + i}`);
    }
    polite.destroy();
    await chatsWithin(port, 2000);
  });
});
