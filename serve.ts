/**
 * natter for `deno serve`: every core of one machine with `deno serve --parallel`, and Deno
 * Deploy. Each worker runs its own hub; they share chat over `BroadcastChannel` and history
 * through one SQLite database (in memory for the process, or the `--data` file), or through
 * Redis with `--redis`/`REDIS_URL`. Options go after the script name; the port and host are
 * `deno serve`'s own `--port` and `--host`.
 *
 *     deno serve --parallel --allow-net --port 8080 serve.ts [natter options]
 *
 * Why not main.ts: a module cannot tell `deno run` from `deno serve` while it loads, and
 * `deno run` warns about any main module that exports `{ fetch }`.
 */

import { ChannelBroker } from "./lib/cluster/broker.ts";
import { readCommand, SAME_PRESS_MS, start } from "./lib/entry.ts";
import { VERSION } from "./lib/base/version.ts";
import { SHUTDOWN_GRACE_MS } from "./lib/base/defaults.ts";

/** Fails the worker with a message, the way main.ts fails the process. */
function fail(message: string, status: number): never {
  console.error(`natter: ${message}`);
  Deno.exit(status);
}

const command = readCommand(Deno.args);
if ("exit" in command) Deno.exit(command.exit);
const { options, log, settings } = command;
if (Deno.args.some((arg) => /^(--(port|hostname|cert|key)\b|-[pH]$)/.test(arg))) {
  fail("under deno serve, give --port, --host, --cert and --key to deno serve itself", 2);
}
// The workers share history and ids through the --data file (SQLite serialises their writes, so
// ids stay one sequence) or Redis. Without either, each worker keeps its own history in memory:
// chat still spans the workers, but history, ids and recovery do not.
if (options.data === undefined && options.redis === undefined) {
  log.warn(
    "history is per worker: give --data FILE (with --allow-read and --allow-write for it) or " +
      "--redis URL to share history and ids between the workers of deno serve --parallel",
  );
}
const app = await start(options, log, new ChannelBroker());
if ("exit" in app) Deno.exit(app.exit);
// deno serve prints where it listens; each worker says it is ready, and with which settings.
log.info(`natter ${VERSION} worker ready`, { settings });

// On a signal every worker drains its own clients. A signal may reach one worker only, and its
// exit ends them all: so each asks the others to drain too (over a channel of their own), and
// waits for them within the grace before it exits.
const drains = new BroadcastChannel("natter.drain");
const me = crypto.randomUUID();
const workers = new Set<string>();
const drained = new Set<string>();
let draining: Promise<void> | undefined;
const drainSelf = (why: Record<string, string>) =>
  draining ??= (async () => {
    log.info("shutting down", { ...why, connections: app.hub.connections });
    const stuck = await app.shutdown(SHUTDOWN_GRACE_MS);
    if (stuck > 0) log.warn("clients did not finish closing in time", { clients: stuck });
    log.info("stopped");
  })();
drains.onmessage = async ({ data }: MessageEvent) => {
  if (data.from === me) return;
  if (data.kind === "hello") {
    if (!workers.has(data.from) && !data.reply) {
      drains.postMessage({ kind: "hello", from: me, reply: true });
    }
    workers.add(data.from);
  } else if (data.kind === "drain") {
    await drainSelf({ asked: "by another worker" });
    drains.postMessage({ kind: "drained", from: me });
  } else if (data.kind === "drained") drained.add(data.from);
};
drains.postMessage({ kind: "hello", from: me });
let firstSignal: number | undefined;
const onSignal = async (signal: Deno.Signal) => {
  if (firstSignal !== undefined) {
    if (performance.now() - firstSignal < SAME_PRESS_MS) return; // one Ctrl+C via deno task
    log.warn("second signal: exiting now", { signal });
    Deno.exit(130);
  }
  firstSignal = performance.now();
  drains.postMessage({ kind: "drain", from: me });
  await drainSelf({ signal });
  const deadline = Date.now() + SHUTDOWN_GRACE_MS + 1000;
  while ([...workers].some((worker) => !drained.has(worker)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", () => onSignal("SIGINT"));
if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => onSignal("SIGTERM"));

export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;
