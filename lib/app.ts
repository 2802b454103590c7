/**
 * The application as one `fetch` handler: the page, the guarded WebSocket upgrade,
 * health and metrics. Works with `Deno.serve`, `deno serve` and tests alike.
 */

import { timingSafeEqual } from "node:crypto";
import { resolveOptions } from "./config.ts";
import type { Options } from "./config.ts";
import { type Broker, LocalBroker } from "./broker.ts";
import { SocketConnection, type SocketSettings } from "./connection.ts";
import { type HistoryStore, MemoryStore } from "./history.ts";
import { Hub } from "./hub.ts";
import { type Logger, SILENT } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { CloseCode, JSON_PROTOCOL } from "./protocol.ts";
import { stopFlushing } from "./outbox.ts";
import { redact, RedisBroker, RedisLink, RedisStore } from "./redis.ts";
import { SqliteStore } from "./sqlite.ts";
import { isAsset, serveAsset } from "./static.ts";
import { VERSION } from "./version.ts";

/** A running natter: hand `fetch` to a server, call `shutdown` before stopping it. */
export interface App {
  fetch(request: Request, info: Deno.ServeHandlerInfo): Response;
  /**
   * Tells every client the server is going away, closes them with 1001, and waits up to
   * `graceMs` for their sockets to finish closing. Resolves with how many did not.
   */
  shutdown(graceMs?: number): Promise<number>;
  readonly hub: Hub;
  readonly options: Options;
  readonly metrics: Metrics;
}

/** What varies between production and tests. */
export interface AppDeps {
  log?: Logger;
  /** Milliseconds, for uptime. */
  now?: () => number;
  /** The history store; by default memory, or SQLite at `options.data`. */
  store?: HistoryStore;
  /** Fan-out to other hubs; by default in-process only. */
  broker?: Broker;
}

/** Subprotocol prefix that carries the token from browsers, which cannot set headers. */
export const TOKEN_PROTOCOL_PREFIX = "natter.token.";

const TEXT = { "content-type": "text/plain; charset=utf-8" };
const ROUTES = new Set(["/healthz", "/metrics", "/auth"]);
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

/** A JSON answer that no cache keeps. */
function json(request: Request, value: unknown, status = 200): Response {
  return new Response(request.method === "HEAD" ? null : JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

function plain(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body + "\n", { status, headers: { ...TEXT, ...headers } });
}

/** The client's address without the IPv4-mapped IPv6 prefix, so one client has one key. */
function addressOf(remote: Deno.Addr): string {
  if (remote.transport !== "tcp" && remote.transport !== "udp") return "local";
  return remote.hostname.replace(/^::ffff:(?=\d+\.)/, "");
}

function sameSecret(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  // Compare equal-length buffers in constant time; the length check leaks only the length.
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Builds the app from options. Throws ConfigError on a bad option, StoreError when the
 * `data` file cannot be used.
 */
export function createApp(partial: Partial<Options> = {}, deps: AppDeps = {}): App {
  const options = resolveOptions(partial);
  const log = deps.log ?? SILENT;
  const now = deps.now ?? Date.now;
  const started = now();
  const metrics = new Metrics();
  const retention = { maxCount: options.historyLimit, maxAgeMs: options.historyMaxAgeMs };
  const store = deps.store ??
    (options.data === undefined
      ? new MemoryStore(retention)
      : new SqliteStore(options.data, retention));
  const hub = new Hub({
    server: `natter/${VERSION}`,
    defaultRoom: options.defaultRoom,
    maxMessageBytes: options.maxMessageBytes,
    metrics,
    store,
    historyOnJoin: options.history,
    broker: deps.broker ?? new LocalBroker(),
  });
  const broker = hub.broker;
  /** Sockets from upgrade to close event: what the connection caps count. */
  let sockets = 0;
  const perAddress = new Map<string, number>();
  const anyOrigin = options.allowOrigins.includes("*");
  /** Set once shutdown begins: no new sockets, and /healthz says so to load balancers. */
  let draining = false;
  /** What every connection shares: one object, not a copy per connection. */
  const socketSettings: SocketSettings = {
    hub,
    maxMessageBytes: options.maxMessageBytes,
    rateBurst: options.rateBurst,
    ratePerSecond: options.ratePerSecond,
    maxBufferedBytes: options.maxBufferedBytes,
    metrics,
    log,
    onGone(conn) {
      sockets--;
      const left = (perAddress.get(conn.address) ?? 1) - 1;
      if (left > 0) perAddress.set(conn.address, left);
      else perAddress.delete(conn.address);
    },
  };

  function refuse(reason: string, address: string, response: Response): Response {
    Metrics.bump(metrics.refused, reason);
    log.info("upgrade refused", { reason, status: response.status, address });
    return response;
  }

  function originAllowed(request: Request): boolean {
    const origin = request.headers.get("origin");
    if (origin === null || anyOrigin) return true; // REPLs and scripts send no Origin
    if (options.allowOrigins.includes(origin)) return true;
    try {
      return new URL(origin).host === request.headers.get("host");
    } catch {
      return false;
    }
  }

  function tokenOf(request: Request, url: URL, offered: string[]): string | undefined {
    const header = request.headers.get("authorization");
    const bearer = header === null ? null : /^bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer) return bearer[1];
    const fromProtocol = offered.find((p) => p.startsWith(TOKEN_PROTOCOL_PREFIX));
    if (fromProtocol) return fromProtocol.slice(TOKEN_PROTOCOL_PREFIX.length);
    return url.searchParams.get("token") ?? undefined;
  }

  function authorized(request: Request, url: URL, offered: string[]): boolean {
    if (options.token === undefined) return true;
    const given = tokenOf(request, url, offered);
    return given !== undefined && sameSecret(given, options.token);
  }

  function upgrade(request: Request, url: URL, info: Deno.ServeHandlerInfo): Response {
    // Read before upgrading (once upgraded, the request is gone and so is its address), and
    // once: each read is a call into the runtime.
    const remote = info.remoteAddr;
    const address = addressOf(remote);
    // RFC 6455 §4.2.1: refuse a malformed handshake before any socket exists.
    if (!WEBSOCKET_KEY.test(request.headers.get("sec-websocket-key") ?? "")) {
      return refuse(
        "bad_handshake",
        address,
        plain(400, "Bad WebSocket upgrade: Sec-WebSocket-Key is missing or malformed"),
      );
    }
    if (request.headers.get("sec-websocket-version") !== "13") {
      return refuse(
        "bad_version",
        address,
        plain(426, "Unsupported WebSocket version: natter speaks version 13", {
          "sec-websocket-version": "13",
        }),
      );
    }
    if (!originAllowed(request)) {
      return refuse(
        "origin",
        address,
        plain(403, "Forbidden: pages from this origin may not connect (see --allow-origin)"),
      );
    }
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
      p.trim()
    );
    if (!authorized(request, url, offered)) {
      return refuse(
        "token",
        address,
        plain(
          401,
          "Unauthorized: this server needs a token (?token=, or the natter.token.<token> subprotocol)",
          {
            "www-authenticate": 'Bearer realm="natter"',
          },
        ),
      );
    }
    if (draining) {
      return refuse(
        "shutting_down",
        address,
        plain(503, "The server is shutting down; try again in a moment", { "retry-after": "5" }),
      );
    }
    if (sockets >= options.maxConnections) {
      return refuse(
        "full",
        address,
        plain(503, "The server is full; try again later", { "retry-after": "10" }),
      );
    }
    const mine = perAddress.get(address) ?? 0;
    if (options.maxPerAddress > 0 && mine >= options.maxPerAddress) {
      return refuse(
        "per_address",
        address,
        plain(429, "Too many connections from your address", { "retry-after": "10" }),
      );
    }

    const format = offered.includes(JSON_PROTOCOL) ? "json" : "text";
    let upgraded;
    try {
      upgraded = Deno.upgradeWebSocket(request, {
        ...(format === "json" ? { protocol: JSON_PROTOCOL } : {}),
        idleTimeout: options.idleTimeout,
      });
    } catch (error) {
      return refuse(
        "bad_handshake",
        address,
        plain(400, `Bad WebSocket upgrade: ${(error as Error).message}`),
      );
    }
    sockets++;
    perAddress.set(address, mine + 1);
    new SocketConnection(upgraded.socket, socketSettings, {
      format,
      address,
      request: {
        name: url.searchParams.get("name"),
        room: url.searchParams.get("room"),
        since: url.searchParams.get("since"),
        epoch: url.searchParams.get("epoch"),
        ...(remote.transport === "tcp" ? { port: remote.port } : {}),
      },
    });
    return upgraded.response;
  }

  /**
   * 200 "ok"; 503 "stopping" while draining, or "degraded" while the shared bus is down (this
   * instance then reaches only its own clients, so a load balancer should prefer others).
   */
  function health(request: Request): Response {
    const bus = broker.status;
    const status = draining ? "stopping" : bus.up ? "ok" : "degraded";
    return json(request, {
      status,
      version: VERSION,
      uptime: Math.round((now() - started) / 1000),
      connections: hub.connections,
      rooms: hub.rooms,
      bus: {
        kind: broker.kind,
        // Which worker or instance answered: its origin tag on the bus.
        instance: broker.origin,
        up: bus.up,
        ...(bus.reason === undefined ? {} : { reason: bus.reason }),
        peers: hub.peers,
      },
    }, status === "ok" ? 200 : 503);
  }

  function metricsPage(request: Request): Response {
    const body = metrics.render({
      connections: hub.connections,
      rooms: hub.rooms,
      uptimeSeconds: Math.round((now() - started) / 1000),
      busUp: broker.status.up ? 1 : 0,
      busPeers: hub.peers,
    });
    return new Response(request.method === "HEAD" ? null : body, {
      headers: {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
        "cache-control": "no-store",
      },
    });
  }

  function fetch(request: Request, info: Deno.ServeHandlerInfo): Response {
    const url = new URL(request.url);
    const path = url.pathname;
    const isEndpoint = path === "/" || path === "/ws";
    const known = isEndpoint || isAsset(path) || ROUTES.has(path);
    if (!known) return plain(404, "Not Found");
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") {
      return plain(405, "Method Not Allowed", { allow: "GET, HEAD" });
    }
    const wantsSocket = request.headers.get("upgrade")?.toLowerCase() === "websocket";
    if (isEndpoint && wantsSocket && method === "GET") return upgrade(request, url, info);
    if (path === "/healthz") return health(request);
    if (path === "/auth") {
      return json(request, {
        required: options.token !== undefined,
        accepted: authorized(request, url, []),
      });
    }
    if (path === "/metrics") return metricsPage(request);
    if (path === "/ws") {
      return plain(
        426,
        'This is natter\'s WebSocket endpoint: connect with new WebSocket("ws://<host>/ws").',
        {
          upgrade: "websocket",
          connection: "Upgrade",
        },
      );
    }
    return serveAsset(request, path);
  }

  return {
    fetch,
    async shutdown(graceMs = 3000) {
      draining = true;
      hub.announce("server is shutting down; reconnect in a moment");
      hub.closeAll(CloseCode.goingAway, "server shutting down");
      const deadline = Date.now() + graceMs;
      while (sockets > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      hub.stop();
      await store.close();
      await broker.close();
      stopFlushing();
      return sockets;
    },
    hub,
    options,
    metrics,
  };
}

/**
 * Builds the app with what its options ask for beyond one process: with `redis`, the shared
 * store and broker (throws RedisError when Redis cannot be reached at start).
 */
export async function openApp(partial: Partial<Options> = {}, deps: AppDeps = {}): Promise<App> {
  const options = resolveOptions(partial);
  if (options.redis === undefined || deps.broker || deps.store) return createApp(options, deps);
  const log = deps.log ?? SILENT;
  const link = await RedisLink.open(options.redis, log);
  try {
    const store = await RedisStore.open(link, {
      maxCount: options.historyLimit,
      maxAgeMs: options.historyMaxAgeMs,
    });
    const broker = new RedisBroker(link);
    const app = createApp(options, { ...deps, store, broker });
    await broker.ready();
    log.info("sharing chat through redis", { url: redact(link.url) });
    return app;
  } catch (error) {
    await link.close();
    throw error;
  }
}
