/**
 * `deno task compile`'s binary: built with `deno compile`, run from an empty directory, it
 * serves the page and chats. `deno compile` downloads a runtime (denort) on first use; where
 * that download is impossible (these build machines reach only the npm registry) the test is
 * skipped, and says why, rather than pretending.
 */

import assert from "node:assert/strict";
import { Client, MAIN, run, ServerProcess } from "./helpers.ts";

const dir = await Deno.makeTempDir({ prefix: "natter-compile-" });
const binary = `${dir}/natter${Deno.build.os === "windows" ? ".exe" : ""}`;
const compiled = await run(["compile", "--quiet", "--allow-net", "-o", binary, MAIN]);
const unreachable = compiled.code !== 0 &&
  /error sending request|dns error|Connect|download/i.test(compiled.stderr);
if (unreachable) {
  await Deno.remove(dir, { recursive: true });
  console.warn(
    "%cSKIPPING the compile test: deno compile could not download its runtime here: %s",
    "color: yellow; font-weight: bold",
    compiled.stderr.split("\n").find((line) => /dns|request|Connect/i.test(line))?.trim() ??
      compiled.stderr.trim(),
  );
}

Deno.test({
  name: "deno compile makes a binary that serves the page and chats from any directory",
  ignore: unreachable,
  async fn() {
    try {
      assert.equal(compiled.code, 0, compiled.stderr);
      const server = new ServerProcess(["--port", "0"], { cwd: dir, executable: binary });
      try {
        const port = await server.port();
        const page = await fetch(`http://127.0.0.1:${port}/`);
        assert.match(await page.text(), /<title>natter<\/title>/);
        const alice = await Client.open(`ws://127.0.0.1:${port}/?name=alice`);
        const bob = await Client.json(`ws://127.0.0.1:${port}/ws?name=bob`);
        alice.send("hello from the binary");
        assert.equal((await bob.event("message")).text, "hello from the binary");
        await Promise.all([alice.close(), bob.close()]);
      } finally {
        await server.stop();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
