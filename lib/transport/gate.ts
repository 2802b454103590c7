/**
 * The guarded WebSocket upgrade (lib/app.ts): what a handshake must show (a well-formed key,
 * version 13, an allowed origin, the token) and what the server must have room for (not
 * shutting down, under its memory budget, under --max-connections and --max-per-address)
 * before any socket exists; and the connection slots those caps count, held from the upgrade
 * until the socket is gone (for a reader dropped as too slow, a while longer).
 */

import { addressGroup } from "../base/address.ts";
import type { Who } from "./admission.ts";
import type { Options } from "../ops/config.ts";
import { OPEN_DEADLINE_MS, SocketConnection, type SocketSettings } from "./connection.ts";
import { Deadlines } from "../base/deadlines.ts";
import type { Turns } from "./outbox.ts";
import type { Hub } from "../chat/hub.ts";
import type { Logger } from "../base/log.ts";
import { Metrics } from "../base/metrics.ts";
import { type OriginCheck, originCheck } from "./origin.ts";
import type { MemoryGuard } from "./pressure.ts";
import { JSON_PROTOCOL } from "../protocol/protocol.ts";
import { plain } from "./routes.ts";
import { authorized } from "./token.ts";

/**
 * How long a connection dropped as too slow keeps its slot. natter frees its own memory and
 * descriptor at once, but the kernel keeps the socket and up to its send buffer (about
 * 1–4 MiB) while the peer keeps acknowledging: counting it for a while keeps such sockets
 * within --max-connections (and --max-per-address).
 */
const SLOW_LINGER_MS = 60_000;
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{22}==$/;

/** The client's address without the IPv4-mapped IPv6 prefix, so one client has one key. */
function addressOf(remote: Deno.Addr): string {
  if (remote.transport !== "tcp" && remote.transport !== "udp") return "local";
  return remote.hostname.replace(/^::ffff:(?=\d+\.)/, "");
}

/** What the gate works with, besides the options. */
export interface GateParts {
  hub: Hub;
  /** Over its budget, new connections are refused. */
  guard: MemoryGuard;
  /** Every chat connection, for the memory guard: the gate adds and removes them. */
  live: Set<SocketConnection>;
  metrics: Metrics;
  log: Logger;
  /** The app's turns: when its connections' queued frames leave. */
  turns: Turns;
}

/** A socket the caller accepted itself (the door), to upgrade over. */
export interface Over {
  socket: import("node:net").Socket;
  head: Uint8Array;
}

export class Gate {
  readonly #options: Options;
  readonly #guard: MemoryGuard;
  readonly #live: Set<SocketConnection>;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #originRefused: OriginCheck;
  /** What every connection shares: one object, not a copy per connection. */
  readonly #settings: SocketSettings;
  /** Sockets from upgrade to close event: what the connection caps count. */
  #sockets = 0;
  /** Of those, dropped slow consumers whose kernel socket may still hold data. */
  #lingering = 0;
  readonly #perAddress = new Map<string, number>();
  /** Set once shutdown begins: no new sockets, and /healthz says so to load balancers. */
  #draining = false;

  constructor(options: Options, parts: GateParts) {
    this.#options = options;
    this.#guard = parts.guard;
    this.#live = parts.live;
    this.#metrics = parts.metrics;
    this.#log = parts.log;
    this.#originRefused = originCheck(options, parts.log);
    this.#settings = {
      hub: parts.hub,
      maxMessageBytes: options.maxMessageBytes,
      rateBurst: options.rateBurst,
      ratePerSecond: options.ratePerSecond,
      maxBufferedBytes: options.maxBufferedBytes,
      metrics: parts.metrics,
      log: parts.log,
      turns: parts.turns,
      opening: new Deadlines(OPEN_DEADLINE_MS, (conn) => conn.abandon()),
      onGone: (conn) => this.#gone(conn),
    };
  }

  /** Sockets from upgrade to close event: what the connection caps count. */
  get sockets(): number {
    return this.#sockets;
  }

  /** Of those, dropped slow consumers whose kernel socket may still hold data. */
  get lingering(): number {
    return this.#lingering;
  }

  /** Shutdown has begun: no new sockets, and slots are no longer kept for slow readers. */
  get draining(): boolean {
    return this.#draining;
  }

  /** Begins shutdown (see {@link draining}). */
  drain(): void {
    this.#draining = true;
  }

  /**
   * The guarded upgrade. `over` is the socket the caller accepted itself (the door); without
   * it the runtime's server (`Deno.serve`) writes the 101. `who` is the client as admitted
   * (lib/transport/admission.ts): its verified identity, or that it is a guest. Returns the
   * response to send, or, over a socket, the connection.
   */
  upgrade(
    request: Request,
    url: URL,
    remote: Deno.Addr,
    over?: Over,
    who: Who = {},
  ): Response | SocketConnection {
    const options = this.#options;
    const address = addressOf(remote);
    const malformed = this.#handshake(request, address);
    if (malformed) return malformed;
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
      p.trim()
    );
    if (!authorized(options.token, request, url, offered)) {
      return this.#refuse(
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
    if (this.#settings.hub.bannedAddress(address)) {
      return this.#refuse("banned", address, plain(403, "Forbidden: this address is banned"));
    }
    if (this.#draining) {
      return this.#refuse(
        "shutting_down",
        address,
        plain(503, "The server is shutting down; try again in a moment", { "retry-after": "5" }),
      );
    }
    if (this.#guard.refusing()) {
      return this.#refuse(
        "memory",
        address,
        plain(503, "The server is busy; try again in a moment", { "retry-after": "10" }),
      );
    }
    if (this.#sockets >= options.maxConnections) {
      return this.#refuse(
        "full",
        address,
        plain(503, "The server is full; try again later", { "retry-after": "10" }),
      );
    }
    const group = addressGroup(address);
    const mine = this.#perAddress.get(group) ?? 0;
    if (options.maxPerAddress > 0 && mine >= options.maxPerAddress) {
      return this.#refuse(
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
      return this.#refuse(
        "bad_handshake",
        address,
        plain(400, `Bad WebSocket upgrade: ${(error as Error).message}`),
      );
    }
    this.#sockets++;
    this.#perAddress.set(group, mine + 1);
    const conn = new SocketConnection(upgraded.socket, this.#settings, {
      format,
      address,
      request: {
        name: url.searchParams.get("name"),
        room: url.searchParams.get("room"),
        since: url.searchParams.get("since"),
        epoch: url.searchParams.get("epoch"),
        session: url.searchParams.get("session"),
        ...(remote.transport === "tcp" ? { port: remote.port } : {}),
        ...who,
      },
    });
    this.#live.add(conn);
    return over ? conn : upgraded.response;
  }

  /**
   * The checks that need nothing but the request (RFC 6455 §4.2.1: a well-formed key, version
   * 13; an allowed origin), in the order docs/PROTOCOL.md gives: before a signed token is
   * looked at (lib/transport/admission.ts), and again as the upgrade begins.
   */
  precheck(request: Request, remote: Deno.Addr): Response | undefined {
    return this.#handshake(request, addressOf(remote));
  }

  /** Logs and counts a refusal decided elsewhere (a signed token's), and returns it. */
  refused(reason: string, remote: Deno.Addr, response: Response): Response {
    return this.#refuse(reason, addressOf(remote), response);
  }

  #handshake(request: Request, address: string): Response | undefined {
    if (!WEBSOCKET_KEY.test(request.headers.get("sec-websocket-key") ?? "")) {
      return this.#refuse(
        "bad_handshake",
        address,
        plain(400, "Bad WebSocket upgrade: Sec-WebSocket-Key is missing or malformed"),
      );
    }
    if (request.headers.get("sec-websocket-version") !== "13") {
      return this.#refuse(
        "bad_version",
        address,
        plain(426, "Unsupported WebSocket version: natter speaks version 13", {
          "sec-websocket-version": "13",
        }),
      );
    }
    const why = this.#originRefused(request);
    if (why !== undefined) return this.#refuse("origin", address, plain(403, `Forbidden: ${why}`));
    return undefined;
  }

  #refuse(reason: string, address: string, response: Response): Response {
    Metrics.bump(this.#metrics.refused, reason);
    this.#log.info("upgrade refused", { reason, status: response.status, address });
    return response;
  }

  /** A connection's socket is gone: its slot is freed, now or after SLOW_LINGER_MS. */
  #gone(conn: SocketConnection): void {
    this.#live.delete(conn);
    const release = () => {
      this.#sockets--;
      const group = addressGroup(conn.address);
      const left = (this.#perAddress.get(group) ?? 1) - 1;
      if (left > 0) this.#perAddress.set(group, left);
      else this.#perAddress.delete(group);
    };
    if (!conn.droppedAsSlow || this.#draining) return release();
    this.#lingering++;
    Deno.unrefTimer(setTimeout(() => {
      this.#lingering--;
      release();
    }, SLOW_LINGER_MS));
  }
}
