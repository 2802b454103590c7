/**
 * The application as one `fetch` handler: the page, the guarded WebSocket upgrade,
 * health and metrics. Works with `Deno.serve`, `deno serve` and tests alike. This file builds
 * the app (its store, hub and broker) and routes requests; the upgrade and its caps are
 * lib/transport/gate.ts, the other routes lib/transport/routes.ts, the token lib/transport/token.ts.
 */

import { SHUTDOWN_GRACE_MS } from "./base/defaults.ts";
import { ConfigError, resolveOptions } from "./ops/config.ts";
import { Admission, type Who } from "./transport/admission.ts";
import { Api } from "./transport/api.ts";
import { Verifier } from "./transport/identity.ts";
import type { Options } from "./ops/config.ts";
import { type Broker, LocalBroker } from "./cluster/broker.ts";
import type { SocketConnection } from "./transport/connection.ts";
import { Gate } from "./transport/gate.ts";
import type { HistoryStore } from "./store/history.ts";
import { MemoryStore } from "./store/memory.ts";
import { Hub } from "./chat/hub.ts";
import { type Logger, SILENT } from "./base/log.ts";
import { Metrics } from "./base/metrics.ts";
import { CloseCode } from "./protocol/protocol.ts";
import { Turns } from "./transport/outbox.ts";
import { MemoryGuard } from "./transport/pressure.ts";
import {
  authPage,
  type DoorStatus,
  health,
  json,
  metricsPage,
  plain,
  type Readings,
  ROUTES,
  webSocketHint,
} from "./transport/routes.ts";
import { SqliteStore } from "./store/sqlite.ts";
import { isAsset, serveAsset } from "./transport/static.ts";
import { VERSION } from "./base/version.ts";

export type { DoorStatus } from "./transport/routes.ts";
export { TOKEN_PROTOCOL_PREFIX } from "./transport/token.ts";

/** A WebSocket upgraded over a socket the caller accepted (see {@link App.upgradeOver}). */
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
  fetch(request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response>;
  /**
   * Upgrades a request that arrived on a `node:net` socket (the door, lib/door/door.ts): the 101 is
   * written on `socket`. Returns the refusal to write instead, when there is one.
   */
  upgradeOver(
    request: Request,
    remote: Deno.NetAddr,
    socket: import("node:net").Socket,
    head: Uint8Array,
  ): Response | Upgraded | Promise<Response | Upgraded>;
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
  /** Checks signed tokens; by default built from `jwtSecret` or `jwtPublicKey`, if set. */
  verifier?: Verifier;
}

/** The token checker the options ask for, if any. */
function verifierFor(options: Options): Verifier | undefined {
  if (options.jwtSecret !== undefined) return new Verifier({ secret: options.jwtSecret });
  if (options.jwtPublicKey !== undefined) {
    return new Verifier({ publicKeyPem: options.jwtPublicKey });
  }
  return undefined;
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
  const verifier = deps.verifier ?? verifierFor(options);
  const admission = new Admission(options, verifier);
  const hub = new Hub({
    ...(verifier ? { verify: (token: string) => verifier.verify(token) } : {}),
    log,
    server: `natter/${VERSION}`,
    defaultRoom: options.defaultRoom,
    maxMessageBytes: options.maxMessageBytes,
    metrics,
    store,
    historyOnJoin: options.history,
    broker: deps.broker ?? new LocalBroker(),
  });
  const broker = hub.broker;
  /** Every chat connection, for the memory guard. */
  const live = new Set<SocketConnection>();
  let door: (() => DoorStatus) | undefined;
  const guard = new MemoryGuard({
    budget: options.maxMemoryBytes,
    connections: () => live,
    idle: () => live.size === 0,
    floor: Math.min(64 * 1024, options.maxBufferedBytes / 4),
    log,
  });
  guard.start();
  const turns = new Turns();
  const gate = new Gate(options, { hub, guard, live, metrics, log, turns });
  const api = options.apiKey === undefined ? undefined : new Api(options, hub, store, metrics, log);

  /** What /healthz and /metrics report, as of now. */
  const readings = (): Readings => ({
    hub,
    store,
    guard,
    metrics,
    uptimeSeconds: Math.round((now() - started) / 1000),
    lingering: gate.lingering,
    draining: gate.draining,
    door: door?.(),
  });

  function fetch(request: Request, info: Deno.ServeHandlerInfo): Response | Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    if (api && path.startsWith("/api/")) {
      return api.handle(request, url, (info.remoteAddr as Deno.NetAddr | undefined)?.hostname);
    }
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
      const remote = info.remoteAddr;
      if (!admission.verifies) return gate.upgrade(request, url, remote) as Response;
      return admitted(request, url, remote).then((who) =>
        who instanceof Response
          ? who
          : gate.upgrade(request, url, remote, undefined, who) as Response
      );
    }
    if (path === "/healthz") return health(request, readings());
    if (path === "/auth") {
      if (!admission.verifies) return authPage(request, url, options.token);
      return admission.check(request, url).then((answer) => json(request, answer));
    }
    if (path === "/metrics") return metricsPage(request, readings());
    if (path === "/ws") return webSocketHint();
    return serveAsset(request, path);
  }

  function upgradeOver(
    request: Request,
    remote: Deno.NetAddr,
    socket: import("node:net").Socket,
    head: Uint8Array,
  ): Response | Upgraded | Promise<Response | Upgraded> {
    const url = new URL(request.url);
    if (!admission.verifies) return upgraded(gate.upgrade(request, url, remote, { socket, head }));
    return admitted(request, url, remote).then((who) =>
      who instanceof Response
        ? who
        : upgraded(gate.upgrade(request, url, remote, { socket, head }, who))
    );
  }

  /**
   * Who a request is, where signed tokens are verified: the handshake's own checks first (in
   * the documented order), then the token; a refusal is logged and counted as the gate's are.
   */
  async function admitted(request: Request, url: URL, remote: Deno.Addr): Promise<Who | Response> {
    const malformed = gate.precheck(request, remote);
    if (malformed) return malformed;
    const who = await admission.admit(request, url);
    return "refusal" in who ? gate.refused(who.reason, remote, who.refusal) : who;
  }

  function upgraded(outcome: Response | SocketConnection): Response | Upgraded {
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
      gate.drain();
      guard.stop();
      hub.announce("server is shutting down; reconnect in a moment");
      hub.closeAll(CloseCode.goingAway, "server shutting down");
      const deadline = Date.now() + graceMs;
      // Slots kept for dropped slow readers are not clients still closing: not waited for.
      while (gate.sockets - gate.lingering > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      hub.stop();
      await store.close();
      await broker.close();
      turns.flushNow();
      api?.stop(); // wrong keys that came during the grace are logged too
      return gate.sockets - gate.lingering;
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
  const verifier = deps.verifier ?? verifierFor(options);
  if (verifier) {
    // A key that cannot be used is a bad flag: said before anything listens.
    try {
      await verifier.ready();
    } catch (error) {
      throw new ConfigError(`--jwt-public-key: ${(error as Error).message}`);
    }
    deps = { ...deps, verifier };
  }
  if (options.redis === undefined || deps.broker || deps.store) return createApp(options, deps);
  const log = deps.log ?? SILENT;
  // The Redis client is loaded only here: a server without `--redis` starts without it.
  const [{ redact, RedisLink }, { RedisStore }, { RedisBroker }] = await Promise.all([
    import("./store/redis_link.ts"),
    import("./store/redis_store.ts"),
    import("./cluster/redis_broker.ts"),
  ]);
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
