/** The command line as a user runs it: a real `deno run --allow-net main.ts` process. */

import assert from "node:assert/strict";
import { Client, MAIN, run, ServerProcess } from "./helpers.ts";

Deno.test("--help prints the usage and exits 0; --version prints the version", async () => {
  const help = await run(["run", "--allow-net", MAIN, "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: deno run --allow-net main\.ts \[options\]/);
  assert.match(help.stdout, /--port PORT/);
  const version = await run(["run", "--allow-net", MAIN, "--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^natter \d+\.\d+\.\d+\n$/);
});

Deno.test("a bad flag or value says what was wrong and what is allowed, and exits 2", async () => {
  const unknown = await run(["run", "--allow-net", MAIN, "--prot", "80"]);
  assert.equal(unknown.code, 2);
  assert.match(
    unknown.stderr,
    /unknown option --prot; did you mean --port\? the options are --port, --hostname, .*--version/,
  );
  const port = await run(["run", "--allow-net", MAIN, "--port", "70000"]);
  assert.equal(port.code, 2);
  assert.match(port.stderr, /--port must be a whole number from 0 to 65535, got "70000"/);
  assert.equal(port.stdout, "");
});

Deno.test("--port 0 picks a free port, prints where to open the page and how to connect, serves it", async () => {
  const server = await ServerProcess.start(["--port", "0"]);
  try {
    const port = await server.port();
    assert.match(server.stdout, new RegExp(`http://localhost:${port}/`));
    assert.match(server.stdout, new RegExp(`new WebSocket\\("ws://localhost:${port}"\\)`));
    const lines = server.stdout.trim().split("\n");
    assert.equal(lines.length, 2, "the banner, and where the settings came from");
    assert.match(
      lines[1]!,
      /^settings from --port; environment not read: give deno --allow-env \(before the script\) to use HOST, /,
    );
    const page = await fetch(`http://localhost:${port}/`);
    assert.equal(page.status, 200);
    await page.body?.cancel();
  } finally {
    await server.stop();
  }
});

Deno.test("SIGTERM closes clients with 1001 and exits 0", async () => {
  const server = await ServerProcess.start();
  const client = await Client.open(`ws://127.0.0.1:${await server.port()}`);
  const status = await server.stop("SIGTERM");
  const closed = await client.closed;
  assert.equal(closed.code, 1001);
  assert.equal(closed.reason, "server shutting down", "natter's own close, not the runtime's");
  assert.equal(status.code, 0);
});

Deno.test("PORT and HOST are read with --allow-env, and ignored without it (no prompt, no error)", async () => {
  const withEnv = new ServerProcess(["run", "--allow-net", "--allow-env", MAIN], {
    env: { PORT: "0", HOST: "127.0.0.1" },
  });
  try {
    await withEnv.port();
    assert.match(withEnv.stdout, /listening on http:\/\/127\.0\.0\.1:\d+\//);
  } finally {
    await withEnv.stop();
  }
  // Without --allow-env, HOST (an interface it could not bind) must be ignored: no prompt,
  // no error, all interfaces.
  const without = new ServerProcess(["run", "--allow-net", MAIN, "--port", "0"], {
    env: { HOST: "no-such-host.invalid" },
  });
  try {
    await without.port();
    assert.match(without.stdout, /listening on http:\/\/localhost:/);
    assert.match(
      without.stdout,
      /environment not read: give deno --allow-env \(before the script\) to use HOST, .*REDIS_URL/,
    );
    assert.equal(without.stderr, "");
  } finally {
    await without.stop();
  }
});

Deno.test("a port already in use is reported plainly, with exit status 1", async () => {
  const first = await ServerProcess.start();
  try {
    const taken = await run(["run", "--allow-net", MAIN, "--port", String(await first.port())]);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, /port \d+ is already in use; pick another with --port/);
  } finally {
    await first.stop();
  }
});

Deno.test("with --token the start line shows where the token goes, never the token", async () => {
  const server = await ServerProcess.start(["--port", "0", "--token", "hunter2-secret"]);
  try {
    const port = await server.port();
    assert.match(
      server.stdout,
      new RegExp(`new WebSocket\\("ws://localhost:${port}/\\?token=…"\\)`),
    );
    assert.doesNotMatch(server.stdout + server.stderr, /hunter2-secret/);
    assert.match(server.stdout, /settings from --port, --token/);
  } finally {
    await server.stop();
  }
});

Deno.test("two flags for one setting are refused; a missing value is explained once", async () => {
  const both = await run(["run", "--allow-net", MAIN, "--token", "a", "--token-file", "/dev/null"]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--token and --token-file both set the same thing; give one/);
  const missing = await run(["run", "--allow-net", MAIN, "-p"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--port needs a value/);
  assert.equal(missing.stderr.match(/--help/g)?.length, 1, `one hint: ${missing.stderr}`);
});

Deno.test("an address natter cannot listen on is named in the error", async () => {
  const bad = await run(["run", "--allow-net", MAIN, "--hostname", "10.9.9.9", "--port", "0"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /cannot listen on 10\.9\.9\.9, port 0/);
});

Deno.test("--data that cannot be opened says why, without asking again for granted permissions", async () => {
  const args = ["run", "--allow-net", "--allow-read", "--allow-write", MAIN, "--port", "0"];
  const missing = await run([...args, "--data", "/nonexistent-dir-natter/x.db"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /check that the directory \/nonexistent-dir-natter exists/);
  const guarded = await run([...args, "--data", "/proc/natter.db"]);
  assert.equal(guarded.code, 1);
  assert.match(guarded.stderr, /--allow-all/);
  assert.doesNotMatch(guarded.stderr, /Run with --allow-read/, "read and write were given");
});

Deno.test("without --allow-net natter says so in one line, not with a stack trace", async () => {
  const denied = await run(["run", MAIN, "--port", "0"]);
  assert.equal(denied.code, 1);
  assert.match(
    denied.stderr,
    /no permission to listen on all interfaces, port 0: grant it with --allow-net/,
  );
  assert.doesNotMatch(denied.stderr, /Uncaught/);
});
