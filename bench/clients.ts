/**
 * Many clients at little cost to the load generator: bench/connect.c, compiled here with `cc`
 * and pinned to the generator's core. It opens the connections in batches, then counts the
 * events (lines of text frames) they receive. A Deno client (a WebSocket object, even a raw
 * socket) spent a core on its own side while the server's core idled: it measured itself.
 */

import { haveTaskset } from "./harness.ts";

/** The compiled client, or undefined where there is no C compiler (callers fall back to Deno). */
export const CONNECTOR: string | undefined = await (async () => {
  const binary = await Deno.makeTempFile({ prefix: "natter-connect-" });
  const source = new URL("./connect.c", import.meta.url).pathname;
  try {
    const built = await new Deno.Command("cc", { args: ["-O2", "-o", binary, source] }).output();
    if (built.success) return binary;
    console.warn(new TextDecoder().decode(built.stderr));
  } catch {
    // no compiler
  }
  console.warn("no C compiler: clients are opened from Deno (the generator may be the limit)");
  return undefined;
})();

/** Clients opened by the C program, and what they received. */
export interface CClients {
  /** Seconds it took to open them all. */
  seconds: number;
  /** Its CPU use while opening them, as a fraction of a core. */
  generatorCpu: number;
  /** Events received so far by all of them, and the program's CPU seconds so far. */
  report(): Promise<{ lines: number; cpuSeconds: number }>;
  close(): Promise<void>;
}

/** Opens `count` clients to `path`, `batch` at a time. Requires {@link CONNECTOR}. */
export async function openClients(
  port: number,
  path: string,
  count: number,
  batch: number,
): Promise<CClients> {
  if (!CONNECTOR) throw new Error("no C compiler");
  const args = [String(port), path, String(count), String(batch)];
  const child = new Deno.Command(haveTaskset ? "taskset" : CONNECTOR, {
    args: haveTaskset ? ["-c", "1", CONNECTOR, ...args] : args,
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  let buffered = "";
  const line = async () => {
    while (!buffered.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`connect.c ended early: ${buffered}`);
      buffered += value;
    }
    const at = buffered.indexOf("\n");
    const text = buffered.slice(0, at);
    buffered = buffered.slice(at + 1);
    return JSON.parse(text);
  };
  const opened = await line();
  if (opened.failed > 0) throw new Error(`${opened.failed} connections failed`);
  return {
    seconds: opened.seconds,
    generatorCpu: opened.cpuSeconds / opened.seconds,
    async report() {
      await writer.write(new TextEncoder().encode("?\n"));
      return await line();
    },
    async close() {
      await writer.close();
      await reader.cancel();
      await child.status;
    },
  };
}
