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

import { SHUTDOWN_GRACE_MS } from "./lib/defaults.ts";
import { type App, createApp, openApp } from "./lib/app.ts";
import { ChannelBroker } from "./lib/broker.ts";
import { DENO_ENVIRONMENT, parseCommand, usage } from "./lib/cli.ts";
import { ConfigError, type Options } from "./lib/config.ts";
import type { HistoryStore } from "./lib/history.ts";
import { MemoryStore } from "./lib/memory.ts";
import { createLogger, type Logger } from "./lib/log.ts";
import { RedisError } from "./lib/redis.ts";
import { SqliteStore, StoreError } from "./lib/sqlite.ts";
import { VERSION } from "./lib/version.ts";

/** Fails the worker with a message, the way main.ts fails the process. */
function fail(message: string, status: number): never {
  console.error(`natter: ${message}`);
  Deno.exit(status);
}

/**
 * The workers' shared history: the --data file (SQLite serialises the workers' writes, so ids
 * stay one sequence). Without it, each worker keeps its own history in memory: chat still
 * spans the workers, but history, ids and recovery do not.
 */
function sharedStore(options: Options, log: Logger): HistoryStore {
  const retention = { maxCount: options.historyLimit, maxAgeMs: options.historyMaxAgeMs };
  if (options.data !== undefined) return new SqliteStore(options.data, retention);
  log.warn(
    "history is per worker: give --data FILE (with --allow-read and --allow-write for it) or " +
      "--redis URL to share history and ids between the workers of deno serve --parallel",
  );
  return new MemoryStore(retention);
}

async function build(): Promise<{ app: App; log: Logger }> {
  let command;
  try {
    command = parseCommand(Deno.args, DENO_ENVIRONMENT);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    fail(`${error.message}\nRun with --help for usage.`, 2);
  }
  if (command.kind === "help") console.log(usage()), Deno.exit(0);
  if (command.kind === "version") console.log(`natter ${VERSION}`), Deno.exit(0);
  const options = command.options;
  if (Deno.args.some((arg) => /^--(port|hostname|cert|key)\b/.test(arg))) {
    fail("under deno serve, give --port, --host, --cert and --key to deno serve itself", 2);
  }
  const log = createLogger({ format: options.log, quiet: options.quiet });
  try {
    if (options.redis !== undefined) return { app: await openApp(options, { log }), log };
    const store = sharedStore(options, log);
    return { app: createApp(options, { log, store, broker: new ChannelBroker() }), log };
  } catch (error) {
    if (error instanceof StoreError) fail(`cannot use --data: ${error.message}`, 1);
    if (error instanceof RedisError) fail(`cannot use --redis: ${error.message}`, 1);
    throw error;
  }
}

const { app, log } = await build();

// Drain on a signal, as main.ts does: tell the clients, close them with 1001, then exit. Every
// worker hears the signal and drains its own clients.
let stopping = false;
const stop = async (signal: Deno.Signal) => {
  if (stopping) Deno.exit(130);
  stopping = true;
  log.info("shutting down", { signal, connections: app.hub.connections });
  const stuck = await app.shutdown(SHUTDOWN_GRACE_MS);
  if (stuck > 0) log.warn("clients did not finish closing in time", { clients: stuck });
  log.info("stopped");
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));

export default { fetch: app.fetch } satisfies Deno.ServeDefaultExport;
