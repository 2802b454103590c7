/**
 * Options: every field optional for callers, defaults in one place, and validation whose
 * messages name the option, the bad value and what is allowed.
 */

import { DEFAULT_ROOM, HISTORY_LIMIT, HISTORY_ON_JOIN } from "../base/defaults.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../protocol/protocol.ts";
import { checkRoom, ROOM_RULE } from "../protocol/text.ts";
import type { LogFormat } from "../base/log.ts";

/** Log line format. */

/** Everything that can be configured. */
export interface Options {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Interface to listen on; undefined means all interfaces (IPv6 and IPv4). */
  hostname: string | undefined;
  /** Room for connections that ask for none. */
  defaultRoom: string;
  /** Cap on one incoming frame, in UTF-8 bytes; larger ones are refused. */
  maxMessageBytes: number;
  /** Messages a connection may send at once before the rate applies. */
  rateBurst: number;
  /** Messages per second a connection may keep sending. */
  ratePerSecond: number;
  /** Open connections in total; further upgrades get 503. */
  maxConnections: number;
  /** Open connections per remote address; further upgrades get 429. 0 turns it off. */
  maxPerAddress: number;
  /** Unsent bytes a connection may hold before it is closed as too slow. */
  maxBufferedBytes: number;
  /** Seconds without an answer to a ping before a peer is dropped; 0 turns pings off. */
  idleTimeout: number;
  /** Seconds a TCP connection may take to send a request head (or sit idle between requests). */
  headerTimeout: number;
  /** Resident memory above which new connections are refused, in bytes. */
  maxMemoryBytes: number;
  /** Origins whose pages may connect besides the server's own; ["*"] allows any. */
  allowOrigins: string[];
  /** Origins the server is reached at (a domain name, a proxy): their pages are its own. */
  publicOrigins: string[];
  /** Shared secret clients must present; undefined lets anyone in. */
  token: string | undefined;
  /** HS256 secret that signs users' tokens (lib/transport/identity.ts); undefined: none. */
  jwtSecret: string | undefined;
  /** PEM public key (ES256 or RS256) that checks users' tokens; undefined: none. */
  jwtPublicKey: string | undefined;
  /**
   * Whether people without a token may connect where tokens are verified (as marked guests);
   * undefined: yes without --jwt-*, no with it.
   */
  guests: boolean | undefined;
  /** Key for the server API (`/api/`, lib/transport/api.ts); undefined: no API. */
  apiKey: string | undefined;
  /** PEM certificate chain and private key: serve https/wss when both are set. */
  cert: string | undefined;
  key: string | undefined;
  /** Log line format. */
  log: LogFormat;
  /** Log only warnings and errors. */
  quiet: boolean;
  /** SQLite file for history; undefined keeps history in memory. */
  data: string | undefined;
  /** Messages a JSON client gets with its welcome. */
  history: number;
  /** Messages kept per room. */
  historyLimit: number;
  /** Oldest message kept, in milliseconds; 0 keeps them regardless of age. */
  historyMaxAgeMs: number;
  /** Redis URL shared by every instance (history, ids, fan-out, presence); undefined: none. */
  redis: string | undefined;
}

/** The defaults: every interface, port 8080, limits that a chat never notices. */
export const DEFAULTS: Readonly<Options> = {
  port: 8080,
  hostname: undefined,
  defaultRoom: DEFAULT_ROOM,
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
  rateBurst: 20,
  ratePerSecond: 5,
  maxConnections: 10_000,
  maxPerAddress: 0,
  maxBufferedBytes: 1024 * 1024,
  idleTimeout: 30,
  headerTimeout: 10,
  maxMemoryBytes: 1024 * 1024 * 1024,
  allowOrigins: [],
  publicOrigins: [],
  token: undefined,
  jwtSecret: undefined,
  jwtPublicKey: undefined,
  guests: undefined,
  apiKey: undefined,
  cert: undefined,
  key: undefined,
  log: "text",
  quiet: false,
  data: undefined,
  history: HISTORY_ON_JOIN,
  historyLimit: HISTORY_LIMIT,
  historyMaxAgeMs: 0,
  redis: undefined,
};

/** A bad option value or flag; the CLI prints the message and exits with status 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** What a token may contain: it travels in a query string or a subprotocol name. */
export const TOKEN_RULE = "8-256 letters, digits, '-', '.', '_' or '~'";
const TOKEN = /^[A-Za-z0-9._~-]{8,256}$/;

function whole(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
    throw new ConfigError(`'${name}' must be a whole number ${range}, got ${value}`);
  }
}

/** Fills in defaults and validates; throws {@link ConfigError} naming the first bad option. */
export function resolveOptions(partial: Partial<Options> = {}): Options {
  const options: Options = { ...DEFAULTS };
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (options as unknown as Record<string, unknown>)[key] = value;
  }
  whole("port", options.port, 0, 65535);
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
  whole("maxMessageBytes", options.maxMessageBytes, 64, 16 * 1024 * 1024);
  whole("rateBurst", options.rateBurst, 1);
  if (!(options.ratePerSecond > 0) || !Number.isFinite(options.ratePerSecond)) {
    throw new ConfigError(`'ratePerSecond' must be a number above 0, got ${options.ratePerSecond}`);
  }
  whole("maxConnections", options.maxConnections, 1);
  whole("maxPerAddress", options.maxPerAddress, 0);
  whole("maxBufferedBytes", options.maxBufferedBytes, 1024);
  whole("idleTimeout", options.idleTimeout, 0, 3600);
  whole("headerTimeout", options.headerTimeout, 1, 3600);
  whole("maxMemoryBytes", options.maxMemoryBytes, 64 * 1024 * 1024);
  for (const origin of options.allowOrigins) {
    if (origin !== "*" && !isOrigin(origin)) {
      throw new ConfigError(
        `'allowOrigins' entries must be '*' or an origin such as https://chat.example.com, got ${
          JSON.stringify(origin)
        }`,
      );
    }
  }
  for (const origin of options.publicOrigins) {
    if (!isOrigin(origin)) {
      throw new ConfigError(
        `'publicOrigins' entries must be origins such as https://chat.example.com, got ${
          JSON.stringify(origin)
        }`,
      );
    }
  }
  if (options.token !== undefined && !TOKEN.test(options.token)) {
    throw new ConfigError(`'token' must be ${TOKEN_RULE} (got ${options.token.length} characters)`);
  }
  const verifies = options.jwtSecret !== undefined || options.jwtPublicKey !== undefined;
  if (options.jwtSecret !== undefined && options.jwtPublicKey !== undefined) {
    throw new ConfigError("'jwtSecret' and 'jwtPublicKey' are two keys for one job: give one");
  }
  if (options.jwtSecret !== undefined && new TextEncoder().encode(options.jwtSecret).length < 32) {
    throw new ConfigError(
      "'jwtSecret' must be at least 32 bytes (HS256 needs a key as long as its hash); " +
        "make one with: openssl rand -base64 32",
    );
  }
  if (verifies && options.token !== undefined) {
    throw new ConfigError(
      "'token' and signed tokens ('jwtSecret', 'jwtPublicKey') both decide who may connect: give one",
    );
  }
  if (options.guests === false && !verifies) {
    throw new ConfigError(
      "--guests no needs --jwt-secret or --jwt-public-key: without signed tokens everyone is a guest",
    );
  }
  if (options.apiKey !== undefined && !/^[\x21-\x7e]{16,256}$/.test(options.apiKey)) {
    throw new ConfigError(
      "'apiKey' must be 16-256 visible ASCII characters; make one with: openssl rand -hex 24",
    );
  }
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new ConfigError("'cert' and 'key' go together: give both to serve TLS, or neither");
  }
  whole("history", options.history, 0, 1000);
  whole("historyLimit", options.historyLimit, 1);
  whole("historyMaxAgeMs", options.historyMaxAgeMs, 0);
  if (options.data !== undefined && options.data.trim() === "") {
    throw new ConfigError("'data' must be a file path, such as natter.db");
  }
  if (options.redis !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(options.redis);
    } catch {
      // reported below
    }
    if (url?.protocol !== "redis:" && url?.protocol !== "rediss:") {
      throw new ConfigError(
        `'redis' must be a URL such as redis://localhost:6379 or rediss://host:6380, got ${
          JSON.stringify(options.redis)
        }`,
      );
    }
    if (options.data !== undefined) {
      throw new ConfigError(
        "'redis' and 'data' do not go together: with Redis, history lives there",
      );
    }
  }
  if (options.log !== "text" && options.log !== "json") {
    throw new ConfigError(`'log' must be "text" or "json", got ${JSON.stringify(options.log)}`);
  }
  return options;
}

function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === "http:" || url.protocol === "https:") && url.origin === value;
  } catch {
    return false;
  }
}
