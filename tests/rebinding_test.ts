/**
 * DNS rebinding against a real natter process: an attacker's page whose name now points at the
 * server sends a matching Host and Origin. "Same origin" alone would let it in.
 */

import assert from "node:assert/strict";
import { rawExchange, ServerProcess, upgradeRequest } from "./helpers.ts";

function status(head: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
}

async function upgrade(port: number, host: string, origin: string): Promise<string> {
  return await rawExchange(port, upgradeRequest("/", { host, origin }));
}

/** The whole answer to a request, head and body, read until the server closes. */
async function whole(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  let text = "";
  const buffer = new Uint8Array(4096);
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  conn.close();
  return text;
}

Deno.test("rebinding: a page from a host natter does not know is refused, even with a matching Origin", async () => {
  const server = await ServerProcess.start(["--port", "0", "--hostname", "127.0.0.1"]);
  try {
    const port = await server.port();
    const evil = await whole(
      port,
      upgradeRequest("/", { host: `evil.test:${port}`, origin: `http://evil.test:${port}` }),
    );
    assert.equal(status(evil), 403, evil);
    assert.match(evil, /start it with --public-origin http:\/\/evil\.test/);
    // Its own names still work: loopback names and IP addresses.
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `app.localhost:${port}`]) {
      const own = await upgrade(port, host, `http://${host}`);
      assert.equal(status(own), 101, `${host}: ${own}`);
    }
    assert.match(server.stderr, /does not know.*--public-origin/);
  } finally {
    await server.stop("SIGKILL");
  }
});

Deno.test("rebinding: --public-origin names where the server is reached; only that origin gets in", async () => {
  const server = await ServerProcess.start([
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--public-origin",
    "https://chat.example.com",
  ]);
  try {
    const port = await server.port();
    const proxied = await upgrade(port, "chat.example.com", "https://chat.example.com");
    assert.equal(status(proxied), 101, proxied);
    const other = await upgrade(port, "evil.test", "http://evil.test");
    assert.equal(status(other), 403, other);
  } finally {
    await server.stop("SIGKILL");
  }
});
