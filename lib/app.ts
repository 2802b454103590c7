/**
 * The application as one `fetch` handler: the page, the guarded WebSocket upgrade,
 * health and metrics. Works with `Deno.serve`, `deno serve` and tests alike.
 */

import { SHUTDOWN_GRACE_MS } from "./defaults.ts";
import { addressGroup } from "./address.ts";
import { timingSafeEqual } from "node:crypto";
import { resolveOptions } from "./config.ts";
import type { Options } from "./config.ts";
import { type Broker, LocalBroker } from "./broker.ts";
import { SocketConnection, type SocketSettings } from "./connection.ts";
import type { HistoryStore } from "./history.ts";
import { MemoryStore } from "./memory.ts";
import { Hub } from "./hub.ts";
import { type Logger, SILENT } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { CloseCode, JSON_PROTOCOL } from "./protocol.ts";
import { stopFlushing } from "./outbox.ts";
import { originCheck } from "./origin.ts";
import { MemoryGuard } from "./pressure.ts";
import { redact, RedisBroker, RedisLink, RedisStore } from "./redis.ts";
import { SqliteStore } from "./sqlite.ts";
import { isAsset, serveAsset } from "./static.ts";
import { VERSION } from "./version.ts";

/** A WebSocket upgraded over a socket the caller accepted (see {@link App.upgradeOver}). */
/** What the listener in front (the door, lib/door.ts) reports to `/healthz` and `/metrics`. */
export interface DoorStatus {
  /** Open TCP connections: pending and upgraded. */
  sockets: number;
  /** Connections that are not WebSockets (yet). */
  pending: number;
  /** The cap on open TCP connections in force (learned when descriptors ran out). */
  budget: number;
  /** Why the door is degraded, if it was in the last few seconds. */
  trouble: string | undefined;
}

export interface Upgraded {
  /** Calls `done` once the chat connection is gone (its slot is free). */
  whenGone(done: () => void): void;
  /** Calls `done` once the WebSocket is open (its handshake is over). */
  whenOpen(done: () => void): void;
  /** The caller saw the socket close before the WebSocket opened: free the slot now. */
  abandon(): void;
}

/** A running natter: hand `fetch` to a server, call `shutdown` before stopping it. */
export interface App {
  fetch(request: Request, info: Deno.ServeHandlerInfo): Response;
  /**
   * Upgrades a request that arrived on a `node:net` socket (the door, lib/door.ts): the 101 is
   * written on `socket`. Returns the refusal to write instead, when there is one.
   */
  upgradeOver(
    request: Request,
    remote: Deno.NetAddr,
    socket: import("node:net").Socket,
    head: Uint8Array,
  ): Response | Upgraded;
  /** Lets `/healthz` and `/metrics` report the listener in front (the door). */
  attachDoor(status: () => DoorStatus): void;
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
/**
 * How long a connection dropped as too slow keeps its slot. natter frees its own memory and
 * descriptor at once, but the kernel keeps the socket and up to its send buffer (about
 * 1–4 MiB) while the peer keeps acknowledging: counting it for a while keeps such sockets
 * within --max-connections (and --max-per-address).
 */
const SLOW_LINGER_MS = 60_000;
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
  /** Of those, dropped slow consumers whose kernel socket may still hold data. */
  let lingering = 0;
  const perAddress = new Map<string, number>();
  /** Every chat connection, for the memory guard. */
  const live = new Set<SocketConnection>();
  let door: (() => DoorStatus) | undefined;
  const guard = new MemoryGuard({
    budget: options.maxMemoryBytes,
    connections: () => live,
    floor: Math.min(64 * 1024, options.maxBufferedBytes / 4),
    log,
  });
  guard.start();
  const originRefused = originCheck(options, log);
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
      live.delete(conn);
      const release = () => {
        sockets--;
        const group = addressGroup(conn.address);
        const left = (perAddress.get(group) ?? 1) - 1;
        if (left > 0) perAddress.set(group, left);
        else perAddress.delete(group);
      };
      if (!conn.droppedAsSlow || draining) return release();
      lingering++;
      Deno.unrefTimer(setTimeout(() => {
        lingering--;
        release();
      }, SLOW_LINGER_MS));
    },
  };

  function refuse(reason: string, address: string, response: Response): Response {
    Metrics.bump(metrics.refused, reason);
    log.info("upgrade refused", { reason, status: response.status, address });
    return response;
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

  /**
   * The guarded upgrade. `over` is the socket the caller accepted itself (the door); without
   * it the runtime's server (`Deno.serve`) writes the 101. Returns the response to send, or,
   * over a socket, the connection.
   */
  function upgrade(
    request: Request,
    url: URL,
    remote: Deno.Addr,
    over?: { socket: import("node:net").Socket; head: Uint8Array },
  ): Response | SocketConnection {
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
    const why = originRefused(request);
    if (why !== undefined) return refuse("origin", address, plain(403, `Forbidden: ${why}`));
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
    if (guard.over) {
      return refuse(
        "memory",
        address,
        plain(503, "The server is busy; try again in a moment", { "retry-after": "10" }),
      );
    }
    if (sockets >= options.maxConnections) {
      return refuse(
        "full",
        address,
        plain(503, "The server is full; try again later", { "retry-after": "10" }),
      );
    }
    const group = addressGroup(address);
    const mine = perAddress.get(group) ?? 0;
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
        ...over,
      });
    } catch (error) {
      return refuse(
        "bad_handshake",
        address,
        plain(400, `Bad WebSocket upgrade: ${(error as Error).message}`),
      );
    }
    sockets++;
    perAddress.set(group, mine + 1);
    const conn = new SocketConnection(upgraded.socket, socketSettings, {
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
    live.add(conn);
    return over ? conn : upgraded.response;
  }

  /**
   * 200 "ok"; 503 "stopping" while draining, or "degraded" while the shared bus is down (this
   * instance then reaches only its own clients, so a load balancer should prefer others).
   */
  function health(request: Request): Response {
    const bus = broker.status;
    const front = door?.();
    const problems = [
      ...(bus.up ? [] : ["bus"]),
      ...(guard.over ? ["memory"] : []),
      ...(front?.trouble ? [front.trouble] : []),
    ];
    const status = draining ? "stopping" : problems.length === 0 ? "ok" : "degraded";
    return json(request, {
      status,
      ...(problems.length > 0 ? { problems } : {}),
      version: VERSION,
      uptime: Math.round((now() - started) / 1000),
      connections: hub.connections,
      rooms: hub.rooms,
      memory: {
        rssMiB: Math.round(guard.rss / 1048576),
        budgetMiB: Math.round(guard.budget / 1048576),
        over: guard.over,
      },
      ...(front
        ? { tcp: { open: front.sockets, pending: front.pending, budget: front.budget } }
        : {}),
      ...(lingering > 0 ? { lingering } : {}),
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
    const front = door?.();
    const body = metrics.render({
      connections: hub.connections,
      rooms: hub.rooms,
      uptimeSeconds: Math.round((now() - started) / 1000),
      busUp: broker.status.up ? 1 : 0,
      busPeers: hub.peers,
      memoryBytes: guard.rss,
      memoryBudgetBytes: guard.budget,
      memoryOver: guard.over ? 1 : 0,
      lingering,
      ...(store instanceof MemoryStore
        ? { historyRooms: store.rooms, historyBytes: store.bytes }
        : {}),
      ...(front
        ? { tcpOpen: front.sockets, tcpPending: front.pending, tcpBudget: front.budget }
        : {}),
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
    if (isEndpoint && wantsSocket && method === "GET") {
      // Read the address once, before upgrading: each read is a call into the runtime.
      return upgrade(request, url, info.remoteAddr) as Response;
    }
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

  function upgradeOver(
    request: Request,
    remote: Deno.NetAddr,
    socket: import("node:net").Socket,
    head: Uint8Array,
  ): Response | Upgraded {
    const url = new URL(request.url);
    const outcome = upgrade(request, url, remote, { socket, head });
    if (outcome instanceof Response) return outcome;
    return {
      whenGone(done) {
        outcome.whenGone = done;
      },
      whenOpen(done) {
        outcome.whenOpen = done;
      },
      abandon: () => outcome.abandon(),
    };
  }

  return {
    fetch,
    upgradeOver,
    attachDoor(status) {
      door = status;
    },
    async shutdown(graceMs = SHUTDOWN_GRACE_MS) {
      draining = true;
      guard.stop();
      hub.announce("server is shutting down; reconnect in a moment");
      hub.closeAll(CloseCode.goingAway, "server shutting down");
      const deadline = Date.now() + graceMs;
      // Slots kept for dropped slow readers are not clients still closing: not waited for.
      while (sockets - lingering > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      hub.stop();
      await store.close();
      await broker.close();
      stopFlushing();
      return sockets - lingering;
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
