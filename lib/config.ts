/**
 * Options: their defaults in one place, validation with messages that name the option,
 * the bad value and what is allowed, and the command line that produces them.
 */

import { parseArgs } from "node:util";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./protocol.ts";
import { checkRoom, ROOM_RULE } from "./text.ts";

/** Everything that can be configured. */
export interface Options {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Interface to listen on; undefined means all interfaces (IPv6 and IPv4). */
  hostname: string | undefined;
  /** Room for connections that ask for none. */
  defaultRoom: string;
  /** Cap on one incoming frame, in UTF-8 bytes. */
  maxMessageBytes: number;
}

/** The defaults, as in the original guide: every interface, port 8080. */
export const DEFAULTS: Readonly<Options> = {
  port: 8080,
  hostname: undefined,
  defaultRoom: "lobby",
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
};

/** A bad option value or flag; the CLI prints the message and exits with status 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

function isPort(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 65535;
}

/** Fills in defaults and validates; throws {@link ConfigError} naming the first bad option. */
export function resolveOptions(partial: Partial<Options> = {}): Options {
  const options: Options = { ...DEFAULTS };
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (options as unknown as Record<string, unknown>)[key] = value;
  }
  if (!isPort(options.port)) {
    throw new ConfigError(`'port' must be a whole number from 0 to 65535, got ${options.port}`);
  }
  if (options.hostname !== undefined && !/^[\w.:\-\[\]%]+$/.test(options.hostname)) {
    throw new ConfigError(
      `'hostname' must be a host name or IP address such as 127.0.0.1 or ::, got ${
        JSON.stringify(options.hostname)
      }`,
    );
  }
  const room = checkRoom(options.defaultRoom);
  if (room === null) {
    throw new ConfigError(
      `'defaultRoom' must be ${ROOM_RULE}, got ${JSON.stringify(options.defaultRoom)}`,
    );
  }
  options.defaultRoom = room;
  if (!Number.isInteger(options.maxMessageBytes) || options.maxMessageBytes < 1) {
    throw new ConfigError(
      `'maxMessageBytes' must be a positive whole number, got ${options.maxMessageBytes}`,
    );
  }
  return options;
}

/** The `--help` text. */
export const USAGE = `natter — a small real-time chat server

Usage: deno run --allow-net main.ts [options]

Options:
  -p, --port PORT        port to listen on, 0-65535; 0 picks a free one (default 8080, env PORT)
  -H, --hostname HOST    interface to listen on (default: all interfaces, env HOST)
  -h, --help             print this help and exit
  -V, --version          print the version and exit

Environment variables are read only when --allow-env is granted.
Then open http://localhost:8080/ or, from a REPL: new WebSocket("ws://localhost:8080")`;

const FLAGS = "--port, --hostname, --help, --version";

/** What the command line asks for. */
export type Command =
  | { kind: "serve"; options: Options }
  | { kind: "help" }
  | { kind: "version" };

function parsePort(raw: string, source: string): number {
  if (!/^\d{1,5}$/.test(raw) || !isPort(Number(raw))) {
    throw new ConfigError(
      `${source} must be a whole number from 0 to 65535, got ${JSON.stringify(raw)}`,
    );
  }
  return Number(raw);
}

/**
 * Parses command-line flags, with environment variables as fallbacks.
 * `env` returns undefined for unset variables and for those it may not read.
 */
export function parseCommand(
  args: string[],
  env: (name: string) => string | undefined = () => undefined,
): Command {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string", short: "p" },
        hostname: { type: "string", short: "H" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    }));
  } catch (error) {
    throw new ConfigError(describeArgsError(error));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const partial: Partial<Options> = {};
  const port = values.port ?? env("PORT");
  if (port !== undefined) {
    partial.port = parsePort(port, values.port !== undefined ? "--port" : "PORT");
  }
  const hostname = values.hostname ?? env("HOST");
  if (hostname !== undefined) partial.hostname = hostname;
  try {
    return { kind: "serve", options: resolveOptions(partial) };
  } catch (error) {
    if (error instanceof ConfigError) {
      throw new ConfigError(
        error.message.replace("'hostname'", values.hostname !== undefined ? "--hostname" : "HOST"),
      );
    }
    throw error;
  }
}

function describeArgsError(error: unknown): string {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${quoted}; the options are ${FLAGS}`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${JSON.stringify(quoted)}; the options are ${FLAGS}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const option = /(--[\w-]+)/.exec(message)?.[1] ?? "the option";
      return message.includes("ambiguous")
        ? `${option} needs a value; to pass one that starts with '-', write ${option}=VALUE`
        : `${option} needs a value; see --help`;
    }
    default:
      return message;
  }
}
