/**
 * The command line: one table of flags that drives parsing, environment fallbacks and
 * `--help`, so the three cannot drift apart.
 */

import { parseArgs } from "node:util";
import { describeArgsError } from "./args.ts";
import { ConfigError, DEFAULTS, type Options, resolveOptions } from "./config.ts";

/** What the command line asks for. */
export type Command =
  | {
    kind: "serve";
    options: Options;
    /** Where the settings came from, in one line for the start-up (see {@link settingsLine}). */
    settings: string;
  }
  | { kind: "help" }
  | { kind: "version" };

/** How the CLI reaches the outside world; injectable for tests. */
export interface CliEnvironment {
  /** An environment variable, or undefined when unset or not readable without a prompt. */
  env(name: string): string | undefined;
  /** Whether a variable may be read without a prompt; absent in tests (then: yes). */
  canReadEnv?(name: string): boolean;
  /** A file's text; throws when it cannot be read. */
  readFile(path: string): string;
  /** Whether reading `path` is already allowed (so that no prompt appears); absent in tests. */
  canRead?(path: string): boolean;
}

/**
 * The real environment under Deno: variables and files are read only where permission is
 * already granted, so natter never stops at a permission prompt.
 */
export const DENO_ENVIRONMENT: CliEnvironment = {
  env(name) {
    return DENO_ENVIRONMENT.canReadEnv!(name) ? Deno.env.get(name) : undefined;
  },
  canReadEnv: (name) =>
    Deno.permissions.querySync({ name: "env", variable: name }).state === "granted",
  readFile: (path) => Deno.readTextFileSync(path),
  canRead: (path) => Deno.permissions.querySync({ name: "read", path }).state === "granted",
};

type Parse = (raw: string, flag: string) => Partial<Options>;

interface Flag {
  short?: string;
  env?: string;
  /** Placeholder for the value in --help; boolean flags have none. */
  value?: string;
  help: string;
  parse?: Parse;
  /** The setting it shares with another flag (`--token-file` sets what `--token` does). */
  sets?: string;
}

function number(raw: string, flag: string, what: string, pattern = /^\d+$/): number {
  if (!pattern.test(raw)) {
    throw new ConfigError(`${flag} must be ${what}, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

const BYTES = /^(\d+)\s*(k|kb|kib|m|mb|mib|g|gb|gib)?$/i;

function bytes(raw: string, flag: string): number {
  const match = BYTES.exec(raw.trim());
  if (!match) {
    throw new ConfigError(
      `${flag} must be a size such as 16384, 16KiB, 1MiB or 1GiB, got ${JSON.stringify(raw)}`,
    );
  }
  const unit = (match[2] ?? "").toLowerCase();
  const scale = { k: 1024, m: 1024 * 1024, g: 1024 * 1024 * 1024 }[unit.charAt(0)] ?? 1;
  return Number(match[1]) * scale;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function duration(raw: string, flag: string): number {
  const match = /^(\d+)\s*([smhd])$/.exec(raw.trim());
  if (!match) {
    throw new ConfigError(
      `${flag} must be a duration such as 90s, 30m, 12h or 7d, got ${JSON.stringify(raw)}`,
    );
  }
  return Number(match[1]) * UNITS[match[2]!]!;
}

function file(env: CliEnvironment, path: string, flag: string): string {
  // Ask without prompting: a bad permission is a message, not a prompt in front of a server.
  if (env.canRead && !env.canRead(path)) {
    throw new ConfigError(
      `${flag} cannot read ${JSON.stringify(path)}: run with --allow-read=${path}`,
    );
  }
  try {
    return env.readFile(path);
  } catch (error) {
    const denied = error instanceof Deno.errors.NotCapable ||
      error instanceof Deno.errors.PermissionDenied;
    const hint = denied ? `: run with --allow-read=${path}` : `: ${(error as Error).message}`;
    throw new ConfigError(`${flag} cannot read ${JSON.stringify(path)}${hint}`);
  }
}

function flags(env: CliEnvironment): Record<string, Flag> {
  const whole = (key: keyof Options, what = "a whole number"): Parse => (raw, flag) => ({
    [key]: number(raw, flag, what),
  });
  return {
    port: {
      short: "p",
      env: "PORT",
      value: "PORT",
      help: `port to listen on, 0-65535; 0 picks a free one (default ${DEFAULTS.port})`,
      parse: (raw, flag) => {
        const port = number(raw, flag, "a whole number from 0 to 65535", /^\d{1,5}$/);
        if (port > 65535) {
          throw new ConfigError(`${flag} must be a whole number from 0 to 65535, got "${raw}"`);
        }
        return { port };
      },
    },
    hostname: {
      short: "H",
      env: "HOST",
      value: "HOST",
      help: "interface to listen on (default: all interfaces)",
      parse: (hostname) => ({ hostname }),
    },
    "max-message": {
      value: "BYTES",
      help: `largest message a client may send (default 16KiB)`,
      parse: (raw, flag) => ({ maxMessageBytes: bytes(raw, flag) }),
    },
    rate: {
      value: "N",
      help: `messages per second a connection may keep sending (default ${DEFAULTS.ratePerSecond})`,
      parse: (raw, flag) => ({
        ratePerSecond: number(
          raw,
          flag,
          "a number of messages per second, such as 5 or 0.5",
          /^\d+(\.\d+)?$/,
        ),
      }),
    },
    "rate-burst": {
      value: "N",
      help: `messages a connection may send at once (default ${DEFAULTS.rateBurst})`,
      parse: whole("rateBurst"),
    },
    "max-connections": {
      value: "N",
      help: `open connections in all; more get 503 (default ${DEFAULTS.maxConnections})`,
      parse: whole("maxConnections"),
    },
    "max-per-address": {
      value: "N",
      help: "open connections per client address; more get 429 (default 0: off)",
      parse: whole("maxPerAddress"),
    },
    "max-buffered": {
      value: "BYTES",
      help:
        "unsent bytes a client may hold for 2 s (or 8x at once) before it is dropped as too slow (default 1MiB)",
      parse: (raw, flag) => ({ maxBufferedBytes: bytes(raw, flag) }),
    },
    "idle-timeout": {
      value: "SECONDS",
      help:
        `drop peers that do not answer pings for this long; 0 turns pings off (default ${DEFAULTS.idleTimeout})`,
      parse: whole("idleTimeout", "a whole number of seconds"),
    },
    "header-timeout": {
      value: "SECONDS",
      help:
        `close connections that take longer to send a request, or sit idle between requests (default ${DEFAULTS.headerTimeout})`,
      parse: whole("headerTimeout", "a whole number of seconds"),
    },
    "max-memory": {
      value: "BYTES",
      help:
        "resident memory above which new connections get 503 and the largest send queues are dropped (default 1GiB)",
      parse: (raw, flag) => ({ maxMemoryBytes: bytes(raw, flag) }),
    },
    "allow-origin": {
      value: "ORIGINS",
      help: "other sites whose pages may connect: comma-separated origins, or * (default: none)",
      parse: (raw) => ({
        allowOrigins: raw.split(",").map((origin) => origin.trim()).filter(Boolean),
      }),
    },
    "public-origin": {
      env: "NATTER_PUBLIC_ORIGIN",
      value: "ORIGINS",
      help:
        "where people reach this server when not by localhost or an IP address, e.g. https://chat.example.com (comma-separated)",
      parse: (raw) => ({
        publicOrigins: raw.split(",").map((origin) => origin.trim()).filter(Boolean),
      }),
    },
    token: {
      env: "NATTER_TOKEN",
      value: "TOKEN",
      help: "require this shared secret from every client (?token= or subprotocol)",
      parse: (token) => ({ token }),
    },
    "token-file": {
      sets: "token",
      value: "PATH",
      help: "read the token from a file (needs --allow-read)",
      parse: (path, flag) => ({ token: file(env, path, flag).trim() }),
    },
    "jwt-secret": {
      env: "NATTER_JWT_SECRET",
      value: "SECRET",
      help: "verify users' signed tokens (HS256 JSON Web Tokens) with this secret, 32+ bytes",
      parse: (jwtSecret) => ({ jwtSecret }),
    },
    "jwt-secret-file": {
      sets: "jwt-secret",
      value: "PATH",
      help: "read the JWT secret from a file (needs --allow-read)",
      parse: (path, flag) => ({ jwtSecret: file(env, path, flag).trim() }),
    },
    "jwt-public-key": {
      value: "PATH",
      help: "verify users' signed tokens (ES256 or RS256) with this PEM public key",
      parse: (path, flag) => ({ jwtPublicKey: file(env, path, flag) }),
    },
    guests: {
      value: "yes|no",
      help: "let people in without a signed token, their names marked ~ " +
        "(default: yes without --jwt-*, no with it)",
      parse: (raw, flag) => {
        if (raw !== "yes" && raw !== "no") {
          throw new ConfigError(`${flag} must be yes or no, got ${JSON.stringify(raw)}`);
        }
        return { guests: raw === "yes" };
      },
    },
    "api-key": {
      env: "NATTER_API_KEY",
      value: "KEY",
      help: "serve the server API at /api/ to backends that send Authorization: Bearer KEY",
      parse: (apiKey) => ({ apiKey }),
    },
    "api-key-file": {
      sets: "api-key",
      value: "PATH",
      help: "read the API key from a file (needs --allow-read)",
      parse: (path, flag) => ({ apiKey: file(env, path, flag).trim() }),
    },
    cert: {
      value: "PATH",
      help: "TLS certificate chain (PEM), to serve https and wss (needs --allow-read)",
      parse: (path, flag) => ({ cert: file(env, path, flag) }),
    },
    key: {
      value: "PATH",
      help: "TLS private key (PEM), with --cert",
      parse: (path, flag) => ({ key: file(env, path, flag) }),
    },
    log: {
      value: "FORMAT",
      help: "log lines as text or json (default text)",
      parse: (raw, flag) => {
        if (raw !== "text" && raw !== "json") {
          throw new ConfigError(`${flag} must be text or json, got ${JSON.stringify(raw)}`);
        }
        return { log: raw };
      },
    },
    quiet: { short: "q", help: "log only warnings and errors" },
    data: {
      value: "PATH",
      help:
        "keep history in this SQLite file (needs --allow-read and --allow-write; default: memory)",
      parse: (data) => ({ data }),
    },
    history: {
      value: "N",
      help: `messages a page or app gets when it joins, 0-1000 (default ${DEFAULTS.history})`,
      parse: whole("history"),
    },
    "history-limit": {
      value: "N",
      help: `messages kept per room (default ${DEFAULTS.historyLimit})`,
      parse: whole("historyLimit"),
    },
    "history-max-age": {
      value: "AGE",
      help: "drop messages older than this, e.g. 30d, 12h, 90m (default: keep)",
      parse: (raw, flag) => ({ historyMaxAgeMs: duration(raw, flag) }),
    },
    redis: {
      env: "REDIS_URL",
      value: "URL",
      help: "share chat, history and presence with other instances through this Redis, " +
        "e.g. redis://localhost:6379 (rediss:// for TLS)",
      parse: (redis) => ({ redis }),
    },
    help: { short: "h", help: "print this help and exit" },
    version: { short: "V", help: "print the version and exit" },
  };
}

/** The `--help` text. */
export function usage(): string {
  const table = flags({ env: () => undefined, readFile: () => "" });
  const rows = Object.entries(table).map(([name, flag]) => {
    const left = `${flag.short ? `-${flag.short}, ` : "    "}--${name}${
      flag.value ? ` ${flag.value}` : ""
    }`;
    return `  ${left.padEnd(28)} ${flag.help}${flag.env ? ` [env ${flag.env}]` : ""}`;
  });
  return [
    "natter — a small real-time chat server",
    "",
    "Usage: deno run --allow-net main.ts [options]",
    "   or: deno run --allow-net natter.js [options]   (the bundled file; a compiled binary takes the same)",
    "",
    "Options:",
    ...rows,
    "",
    "Environment variables are read only when --allow-env is granted.",
    'Then open http://localhost:8080/ or, from a REPL: new WebSocket("ws://localhost:8080")',
  ].join("\n");
}

/** Parses command-line flags, with environment variables as fallbacks. */
export function parseCommand(args: string[], env: CliEnvironment): Command {
  const table = flags(env);
  const names = Object.keys(table).map((name) => `--${name}`).join(", ");
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(
        Object.entries(table).map(([name, flag]) => [
          name,
          {
            type: flag.parse ? "string" as const : "boolean" as const,
            ...(flag.short ? { short: flag.short } : {}),
          },
        ]),
      ),
    }));
  } catch (error) {
    throw new ConfigError(describeArgsError(error, names));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const partial: Partial<Options> = { quiet: values.quiet === true };
  /** Which flag or variable set each option, to name it in errors and in the settings line. */
  const sources: Record<string, string> = {};
  const set = (raw: string, source: string, flag: Flag) => {
    const parsed = flag.parse!(raw, source);
    for (const key of Object.keys(parsed)) {
      // Two flags for one setting (--token and --token-file): which one was meant is a guess.
      if (sources[key] !== undefined) {
        throw new ConfigError(`${sources[key]} and ${source} both set the same thing; give one`);
      }
      sources[key] = source;
    }
    Object.assign(partial, parsed);
  };
  // Two flags for one setting are refused before either is read (a file, say).
  const givenFor = new Map<string, string>();
  for (const [name, flag] of Object.entries(table)) {
    if (!flag.parse || typeof values[name] !== "string") continue;
    const setting = flag.sets ?? name;
    const other = givenFor.get(setting);
    if (other) throw new ConfigError(`${other} and --${name} both set the same thing; give one`);
    givenFor.set(setting, `--${name}`);
  }
  // Flags first, then the environment for what no flag set.
  // Every flag is read before any problem is reported: a run says all that is wrong with its
  // flags (a --cert and a --key that cannot be read), not one per run.
  const problems: string[] = [];
  for (const [name, flag] of Object.entries(table)) {
    const given = values[name];
    if (!flag.parse || typeof given !== "string") continue;
    try {
      set(given, `--${name}`, flag);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(error.message);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems.join("\nnatter: "));
  const unread: string[] = [];
  for (const [name, flag] of Object.entries(table)) {
    if (!flag.parse || !flag.env || typeof values[name] === "string") continue;
    if (env.canReadEnv && !env.canReadEnv(flag.env)) {
      unread.push(flag.env);
      continue;
    }
    const raw = env.env(flag.env);
    if (raw === undefined) continue;
    const parsed = flag.parse(raw, flag.env);
    // A flag that sets the same thing (--token-file over NATTER_TOKEN) wins, as flags do.
    if (Object.keys(parsed).some((key) => sources[key] !== undefined)) continue;
    for (const key of Object.keys(parsed)) sources[key] = flag.env;
    Object.assign(partial, parsed);
  }
  if ((partial.cert === undefined) !== (partial.key === undefined)) {
    throw new ConfigError("--cert and --key go together: give both to serve TLS, or neither");
  }
  try {
    const options = resolveOptions(partial);
    return { kind: "serve", options, settings: settingsLine(sources, unread) };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    // Name the flag the user typed rather than the option behind it.
    throw new ConfigError(
      error.message.replace(/'(\w+)'/g, (quoted, key: string) => sources[key] ?? quoted),
    );
  }
}

/**
 * One line for the start-up: the flags and variables that set something (names only: a token's
 * value never shows), and the variables that could not be read, with the permission that would.
 */
export function settingsLine(sources: Record<string, string>, unread: string[]): string {
  const given = [...new Set(Object.values(sources))];
  const parts = [given.length > 0 ? `settings from ${given.join(", ")}` : "default settings"];
  if (unread.length > 0) {
    parts.push(
      `environment not read: give deno --allow-env (before the script) to use ${unread.join(", ")}`,
    );
  }
  return parts.join("; ");
}
