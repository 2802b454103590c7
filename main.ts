/**
 * natter's command line: flags and environment to options, one server, signals.
 *
 *     deno run --allow-net main.ts [--port 8080] [--hostname HOST]
 */

import { type App, createApp } from "./lib/app.ts";
import { ConfigError, type Options, parseCommand, USAGE } from "./lib/config.ts";
import { VERSION } from "./lib/version.ts";

/** Reads an environment variable only where --allow-env already grants it: never prompts. */
function readEnv(name: string): string | undefined {
  const { state } = Deno.permissions.querySync({ name: "env", variable: name });
  return state === "granted" ? Deno.env.get(name) : undefined;
}

function banner(addr: Deno.NetAddr): string {
  const wildcard = addr.hostname === "::" || addr.hostname === "0.0.0.0";
  const host = wildcard
    ? "localhost"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  return `natter ${VERSION} listening on http://${host}:${addr.port}/ — open it in a browser, ` +
    `or from a REPL: let ws = new WebSocket("ws://${host}:${addr.port}")`;
}

/** Serves the app; without a hostname, on every interface (IPv6 and IPv4, or IPv4 alone). */
function serve(options: Options, app: App): Deno.HttpServer<Deno.NetAddr> {
  const listen = (hostname: string) =>
    Deno.serve({
      port: options.port,
      hostname,
      onListen: (addr) => console.log(banner(addr as Deno.NetAddr)),
    }, app.fetch);
  if (options.hostname !== undefined) return listen(options.hostname);
  try {
    return listen("::"); // all interfaces, IPv6 and IPv4 alike
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) throw error;
    return listen("0.0.0.0"); // a host without IPv6
  }
}

function main(): number | undefined {
  let command;
  try {
    command = parseCommand(Deno.args, readEnv);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`natter: ${error.message}\nRun with --help for usage.`);
    return 2;
  }
  if (command.kind === "help") return console.log(USAGE), 0;
  if (command.kind === "version") return console.log(`natter ${VERSION}`), 0;

  const app = createApp(command.options);
  let server;
  try {
    server = serve(command.options, app);
  } catch (error) {
    const port = command.options.port;
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(`natter: port ${port} is already in use; pick another with --port`);
    } else if (
      error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
    ) {
      console.error(
        `natter: no permission to listen: run with --allow-net (${(error as Error).message})`,
      );
    } else console.error(`natter: cannot listen: ${(error as Error).message}`);
    return 1;
  }
  let stopping = false;
  const stop = () => {
    if (stopping) Deno.exit(130); // a second signal: leave at once
    stopping = true;
    app.shutdown();
    server.shutdown().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", stop);
}

if (import.meta.main) {
  const status = main();
  if (status !== undefined) Deno.exit(status);
}
