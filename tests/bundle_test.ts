/**
 * The single-file artifact: `deno bundle` the server, run the one file from an empty
 * temporary directory with only --allow-net, fetch the page and chat through it.
 */

import assert from "node:assert/strict";
import { Client, MAIN, run, ServerProcess } from "./helpers.ts";

Deno.test("deno bundle makes one file that serves the page and chats from any directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "natter-bundle-" });
  try {
    const file = `${dir}/natter.js`;
    const bundled = await run(["bundle", "--quiet", "-o", file, MAIN]);
    assert.equal(bundled.code, 0, bundled.stderr);
    assert.deepEqual([...Deno.readDirSync(dir)].map((entry) => entry.name), ["natter.js"]);

    const server = new ServerProcess(["run", "--allow-net", "natter.js", "--port", "0"], {
      cwd: dir,
    });
    try {
      const port = await server.port();
      const page = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<title>natter<\/title>/);
      const script = await fetch(`http://127.0.0.1:${port}/app.js`);
      assert.match(await script.text(), /natter\.v1/);

      const alice = await Client.open(`ws://127.0.0.1:${port}/?name=alice`);
      const bob = await Client.json(`ws://127.0.0.1:${port}/ws?name=bob`);
      try {
        alice.send("hello from the bundle");
        const message = await bob.event("message");
        assert.equal(message.from, "alice");
        assert.equal(message.text, "hello from the bundle");
      } finally {
        await Promise.all([alice.close(), bob.close()]);
      }
      const versioned = await run(["run", "--allow-net", "natter.js", "--version"], { cwd: dir });
      assert.match(versioned.stdout, /^natter \d+\.\d+\.\d+/);
    } finally {
      await server.stop();
    }
    assert.equal(server.stderr, "", "no permission prompts or warnings");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
