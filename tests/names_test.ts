/** Names that look like someone else's, against a real natter process. */

import assert from "node:assert/strict";
import { Client, ServerProcess } from "./helpers.ts";

Deno.test("names: 'alice' followed by an invisible mark is refused where alice is", async () => {
  const server = await ServerProcess.start(["--port", "0", "--hostname", "127.0.0.1", "--quiet"]);
  const url = `ws://127.0.0.1:${await server.port()}/?room=r`;
  const alice = await Client.open(`${url}&name=alice`);
  try {
    for (const mark of ["\ufe0f", "\ufe00", "\u034f", "\u180b", "\u180f", "\u{e0100}"]) {
      const forger = await Client.open(`${url}&name=${encodeURIComponent(`alice${mark}`)}`);
      try {
        const welcome = forger.lines.find((line) => line.startsWith("* you are"))!;
        assert.doesNotMatch(welcome, /you are alice/, welcome);
        await forger.next((line) => /^! name .* is not allowed/.test(line));
        forger.send(`/nick alice${mark}`);
        await forger.next((line) => /^! name .* is not allowed/.test(line));
      } finally {
        await forger.close();
      }
    }
  } finally {
    await alice.close();
    await server.stop("SIGKILL");
  }
});

Deno.test("names: a look-alike of a present name (Cyrillic а for a) gets a suffix, and /nick to it is refused", async () => {
  const server = await ServerProcess.start(["--port", "0", "--hostname", "127.0.0.1", "--quiet"]);
  const url = `ws://127.0.0.1:${await server.port()}/?room=x`;
  const forged = "\u0430lice"; // Cyrillic а, then Latin "lice"
  const alice = await Client.open(`${url}&name=alice`);
  const forger = await Client.open(`${url}&name=${encodeURIComponent(forged)}`);
  try {
    const welcome = forger.lines.find((line) => line.startsWith("* you are"))!;
    assert.match(welcome, new RegExp(`^\\* you are ${forged}-2 in #x;`), welcome);
    forger.send(`/nick ${forged}`);
    await forger.next((line) => line === `! name "${forged}" is taken in #x`);
    forger.send("/nick \u0410LICE"); // Cyrillic capital А
    await forger.next((line) => line === `! name "\u0410LICE" is taken in #x`);
    // Not everything near alice is taken.
    forger.send("/nick alicia");
    await forger.next((line) => line === `* ${forged}-2 is now alicia`);
  } finally {
    await forger.close();
    await alice.close();
    await server.stop("SIGKILL");
  }
});
