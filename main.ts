/**
 * natter's command line: flags and environment to options, one server, signals.
 *
 *     deno run --allow-net main.ts [--port 8080] [--hostname HOST] [--help]
 */

import { type App, openApp } from "./lib/app.ts";
import { DENO_ENVIRONMENT, parseCommand, usage } from "./lib/cli.ts";
import { ConfigError, type Options } from "./lib/config.ts";
import { createLogger, type Logger } from "./lib/log.ts";
import { RedisError } from "./lib/redis.ts";
import { StoreError } from "./lib/sqlite.ts";
import { VERSION } from "./lib/version.ts";

/** How long a clean stop may take before natter exits anyway. */
const SHUTDOWN_GRACE_MS = 3000;

function banner(addr: Deno.NetAddr, tls: boolean): string {
  const wildcard = addr.hostname === "::" || addr.hostname === "0.0.0.0";
  const host = wildcard
    ? "localhost"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const [http, ws] = tls ? ["https", "wss"] : ["http", "ws"];
  return `natter ${VERSION} listening on ${http}://${host}:${addr.port}/ — open it in a browser, ` +
    `or from a REPL: let ws = new WebSocket("${ws}://${host}:${addr.port}")`;
}

/** Serves the app; without a hostname, on every interface (IPv6 and IPv4, or IPv4 alone). */
function serve(options: Options, app: App, log: Logger): Deno.HttpServer<Deno.NetAddr> {
  const tls = options.cert !== undefined && options.key !== undefined;
  const listen = (hostname: string) =>
    Deno.serve({
      port: options.port,
      hostname,
      ...(tls ? { cert: options.cert, key: options.key } : {}),
      onListen: (addr) => {
        const line = banner(addr as Deno.NetAddr, tls);
        // The banner is for people and always shows; as JSON it is also a normal log line.
        if (options.log === "json") {
          console.log(JSON.stringify({ time: new Date().toISOString(), level: "info", msg: line }));
        } else console.log(line);
      },
      onError: (error) => {
        log.error("request failed", { error: String(error) });
        return new Response("Internal Server Error\n", { status: 500 });
      },
    }, app.fetch);
  if (options.hostname !== undefined) return listen(options.hostname);
  try {
    return listen("::"); // all interfaces, IPv6 and IPv4 alike
  } catch (error) {
    // Only a host without IPv6 gets the IPv4 fallback; a busy port or a permission is the answer.
    const final = [Deno.errors.AddrInUse, Deno.errors.NotCapable, Deno.errors.PermissionDenied];
    if (final.some((kind) => error instanceof kind)) throw error;
    return listen("0.0.0.0");
  }
}

async function main(): Promise<number | undefined> {
  let command;
  try {
    command = parseCommand(Deno.args, DENO_ENVIRONMENT);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`natter: ${error.message}\nRun with --help for usage.`);
    return 2;
  }
  if (command.kind === "help") return console.log(usage()), 0;
  if (command.kind === "version") return console.log(`natter ${VERSION}`), 0;

  const options = command.options;
  const log = createLogger({ format: options.log, quiet: options.quiet });
  let app: App;
  try {
    app = await openApp(options, { log });
  } catch (error) {
    if (error instanceof StoreError) console.error(`natter: cannot use --data: ${error.message}`);
    else if (error instanceof RedisError) {
      console.error(`natter: cannot use --redis: ${error.message}`);
    } else throw error;
    return 1;
  }
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = serve(options, app, log);
  } catch (error) {
    const port = options.port;
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(`natter: port ${port} is already in use; pick another with --port`);
    } else if (
      error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
    ) {
      const where = options.hostname ?? "all interfaces";
      console.error(
        `natter: no permission to listen on ${where}, port ${port}: grant it with --allow-net, ` +
          `or choose an allowed interface with --hostname (${(error as Error).message})`,
      );
    } else console.error(`natter: cannot listen: ${(error as Error).message}`);
    return 1;
  }

  let stopping = false;
  const stop = async (signal: Deno.Signal) => {
    if (stopping) {
      log.warn("second signal: exiting now", { signal });
      Deno.exit(130);
    }
    stopping = true;
    log.info("shutting down", { signal, connections: app.hub.connections });
    const stuck = await app.shutdown(SHUTDOWN_GRACE_MS);
    if (stuck > 0) {
      log.warn("clients did not finish closing in time", {
        clients: stuck,
        graceMs: SHUTDOWN_GRACE_MS,
      });
    }
    await Promise.race([server.shutdown(), new Promise((resolve) => setTimeout(resolve, 500))]);
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

if (import.meta.main) {
  const status = await main();
  if (status !== undefined) Deno.exit(status);
}
