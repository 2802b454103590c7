/**
 * natter's command line: flags and environment to options, one server, signals.
 *
 *     deno run --allow-net main.ts [--port 8080] [--hostname HOST] [--help]
 */

import type { App } from "./lib/app.ts";
import type { Options } from "./lib/ops/config.ts";
import { openDoor } from "./lib/door/door.ts";
import { drainOnSignals, readCommand, start } from "./lib/entry.ts";
import type { Logger } from "./lib/base/log.ts";
import { VERSION } from "./lib/base/version.ts";

function banner(addr: Deno.NetAddr, tls: boolean, token: boolean): string {
  const wildcard = addr.hostname === "::" || addr.hostname === "0.0.0.0";
  const host = wildcard
    ? "localhost"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const [http, ws] = tls ? ["https", "wss"] : ["http", "ws"];
  // With a token, the URL's shape with a placeholder: a token in a start line ends up in logs.
  const query = token ? "/?token=…" : "";
  return `natter ${VERSION} listening on ${http}://${host}:${addr.port}/ — open it in a browser, ` +
    `or from a REPL: let ws = new WebSocket("${ws}://${host}:${addr.port}${query}")`;
}

/** A server that listens: where, and how to stop it. */
interface Listening {
  addr: Deno.NetAddr;
  shutdown(): Promise<void>;
}

/** The cap on connections that have not become chat connections (yet): pages, handshakes. */
function pendingCaps(options: Options) {
  return {
    maxPending: Math.max(256, Math.ceil(options.maxConnections / 8)),
    maxPendingPerAddress: 64,
  };
}

/**
 * Plain HTTP goes through the door (lib/door/door.ts), natter's own listener; without a hostname,
 * on every interface (IPv6 and IPv4, or IPv4 alone).
 */
async function listenPlain(options: Options, app: App, log: Logger): Promise<Listening> {
  const open = (hostname: string) =>
    openDoor(app, {
      port: options.port,
      hostname,
      headerTimeoutMs: options.headerTimeout * 1000,
      ...pendingCaps(options),
      log,
    });
  let door;
  if (options.hostname !== undefined) door = await open(options.hostname);
  else if (!netGranted("[::]", options.port)) door = await open("0.0.0.0"); // IPv4 allowed only
  else {
    try {
      door = await open("::"); // all interfaces, IPv6 and IPv4 alike
    } catch (error) {
      // Only a host without IPv6 gets the IPv4 fallback; a busy port or a permission is the answer.
      const code = (error as { code?: string }).code;
      if (code !== "EAFNOSUPPORT" && code !== "EADDRNOTAVAIL") throw error;
      door = await open("0.0.0.0");
    }
  }
  app.attachDoor(door.status);
  return { addr: door.addr, shutdown: () => door.close() };
}

/**
 * TLS goes through `Deno.serve` (Deno cannot run its WebSocket over a `node:tls` socket). Its
 * accept loop ends on "Too many open files"; natter serves again a second later rather than
 * exit, and keeps serving the clients it has meanwhile.
 */
function listenTls(options: Options, app: App, log: Logger): Listening {
  const serveOnce = (hostname: string, port = options.port) => {
    const server = Deno.serve({
      port,
      hostname,
      cert: options.cert!,
      key: options.key!,
      onListen: () => {},
      onError: (error) => {
        log.error("request failed", { error: String(error) });
        return new Response("Internal Server Error\n", { status: 500 });
      },
    }, app.fetch);
    server.finished.catch((error) => {
      if (stopped) return;
      app.metrics.acceptStalls++;
      log.warn("the listener stopped (out of descriptors?): listening again in 1 s", {
        error: String(error),
      });
      setTimeout(function again() {
        if (stopped) return;
        try {
          // The port it had: with --port 0 a new one would not be the one announced.
          current = serveOnce(hostname, server.addr.port);
        } catch (retry) {
          log.warn("cannot listen again yet", { error: String(retry) });
          setTimeout(again, 1000);
        }
      }, 1000);
    });
    return server;
  };
  let stopped = false;
  let current: Deno.HttpServer<Deno.NetAddr>;
  if (options.hostname !== undefined) current = serveOnce(options.hostname);
  else {
    try {
      current = serveOnce("::");
    } catch (error) {
      const final = [Deno.errors.AddrInUse, Deno.errors.NotCapable, Deno.errors.PermissionDenied];
      if (final.some((kind) => error instanceof kind)) throw error;
      current = serveOnce("0.0.0.0");
    }
  }
  return {
    addr: current.addr,
    shutdown: () => {
      stopped = true;
      return current.shutdown();
    },
  };
}

/** Whether Deno lets natter listen on `host` (`[::1]`-style for IPv6), asked without a prompt. */
function netGranted(host: string, port: number): boolean {
  return Deno.permissions.querySync({ name: "net", host: `${host}:${port}` }).state === "granted";
}

/**
 * Whether Deno lets natter listen where it is asked to: node:net's listen fails outside any
 * handler without the permission (an uncaught error and a stack trace), so it is asked first.
 */
function mayListen(options: Options): boolean {
  const { hostname, port } = options;
  if (hostname === undefined) return netGranted("[::]", port) || netGranted("0.0.0.0", port);
  return netGranted(hostname.includes(":") ? `[${hostname}]` : hostname, port);
}

/** Serves the app and prints the banner, and where its settings came from. */
async function serve(
  options: Options,
  app: App,
  log: Logger,
  settings: string,
): Promise<Listening> {
  const tls = options.cert !== undefined && options.key !== undefined;
  const listening = tls ? listenTls(options, app, log) : await listenPlain(options, app, log);
  const line = banner(listening.addr, tls, options.token !== undefined);
  // The banner is for people and always shows; as JSON it is also a normal log line.
  for (const msg of [line, settings]) {
    if (options.log === "json") {
      console.log(JSON.stringify({ time: new Date().toISOString(), level: "info", msg }));
    } else console.log(msg);
  }
  return listening;
}

async function main(): Promise<number | undefined> {
  const command = readCommand(Deno.args);
  if ("exit" in command) return command.exit;
  const { options, log, settings } = command;
  const app = await start(options, log);
  if ("exit" in app) return app.exit;
  if (!mayListen(options)) {
    const where = options.hostname ?? "all interfaces";
    console.error(
      `natter: no permission to listen on ${where}, port ${options.port}: grant it with ` +
        "--allow-net (before main.ts)",
    );
    return 1;
  }
  let server: Listening;
  try {
    server = await serve(options, app, log, settings);
  } catch (error) {
    const port = options.port;
    const code = (error as { code?: string }).code;
    if (error instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") {
      console.error(`natter: port ${port} is already in use; pick another with --port`);
    } else if (
      error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied ||
      code === "EACCES"
    ) {
      const where = options.hostname ?? "all interfaces";
      console.error(
        `natter: no permission to listen on ${where}, port ${port}: grant it with --allow-net, ` +
          `or choose an allowed interface with --hostname (${(error as Error).message})`,
      );
    } else {
      const where = options.hostname ?? "all interfaces";
      // An address this machine does not have fails with EINVAL or EADDRNOTAVAIL.
      const hint = code === "EINVAL" || code === "EADDRNOTAVAIL"
        ? ` (is ${where} an address of this machine?)`
        : "";
      console.error(
        `natter: cannot listen on ${where}, port ${port}: ${(error as Error).message}${hint}`,
      );
    }
    return 1;
  }

  // Stop listening after the clients are told, without waiting long for it.
  const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  drainOnSignals(app, log, () => Promise.race([server.shutdown(), wait(500)]));
}

if (import.meta.main) {
  const status = await main();
  if (status !== undefined) Deno.exit(status);
}
