/**
 * What the two entry points share (main.ts for `deno run`, serve.ts for `deno serve`): reading
 * the command line, opening the app with the stores and broker its options ask for, and
 * draining on a signal.
 */

import { type App, openApp } from "./app.ts";
import type { Broker } from "./cluster/broker.ts";
import { DENO_ENVIRONMENT, parseCommand, usage } from "./ops/cli.ts";
import { ConfigError, type Options } from "./ops/config.ts";
import { SHUTDOWN_GRACE_MS } from "./base/defaults.ts";
import { createLogger, type Logger } from "./base/log.ts";
import { RedisError } from "./store/redis_error.ts";
import { StoreError } from "./store/sqlite.ts";
import { VERSION } from "./base/version.ts";

/** Options and a logger to run with, or the exit status of a run that is already over. */
export type Start = { options: Options; log: Logger; settings: string } | { exit: number };

/** Reads flags and environment; prints help, the version, or what was wrong (status 2). */
export function readCommand(args: string[]): Start {
  let command;
  try {
    command = parseCommand(args, DENO_ENVIRONMENT);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`natter: ${error.message}\nRun with --help for usage.`);
    return { exit: 2 };
  }
  if (command.kind === "help") return console.log(usage()), { exit: 0 };
  if (command.kind === "version") return console.log(`natter ${VERSION}`), { exit: 0 };
  const { options, settings } = command;
  return { options, settings, log: createLogger({ format: options.log, quiet: options.quiet }) };
}

/**
 * Opens the app, or says why it cannot (a `--data` file or a Redis it cannot use: status 1; a
 * key it cannot use: status 2, as for any bad flag).
 * `broker` carries chat between hubs where there is no Redis (the workers of `deno serve`).
 */
export async function start(
  options: Options,
  log: Logger,
  broker?: Broker,
): Promise<App | { exit: number }> {
  try {
    const shared = options.redis === undefined && broker ? { broker } : {};
    return await openApp(options, { log, ...shared });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`natter: ${error.message}\nRun with --help for usage.`);
      return { exit: 2 };
    }
    if (error instanceof StoreError) console.error(`natter: cannot use --data: ${error.message}`);
    else if (error instanceof RedisError) {
      console.error(`natter: cannot use Redis (--redis or REDIS_URL): ${error.message}`);
    } else throw error;
    return { exit: 1 };
  }
}

/** Signals this close together are one Ctrl+C (see {@link drainOnSignals}). */
export const SAME_PRESS_MS = 1000;

/**
 * On SIGINT or SIGTERM: tell the clients, close them with 1001, run `after` (stop listening),
 * exit 0. A second signal exits at once with 130.
 */
export function drainOnSignals(app: App, log: Logger, after?: () => Promise<unknown>): void {
  let stoppingAt: number | undefined;
  const stop = async (signal: Deno.Signal) => {
    if (stoppingAt !== undefined) {
      // `deno task` passes a terminal's Ctrl+C on to natter, which got it too: one press, two
      // signals. A second one means "now" only when it comes later than that.
      if (performance.now() - stoppingAt < SAME_PRESS_MS) return;
      log.warn("second signal: exiting now", { signal });
      Deno.exit(130);
    }
    stoppingAt = performance.now();
    log.info("shutting down", { signal, connections: app.hub.connections });
    const stuck = await app.shutdown(SHUTDOWN_GRACE_MS);
    if (stuck > 0) {
      log.warn("clients did not finish closing in time", {
        clients: stuck,
        graceMs: SHUTDOWN_GRACE_MS,
      });
    }
    await after?.();
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}
