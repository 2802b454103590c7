/**
 * The door: natter's own TCP listener for `deno run` (plain HTTP and WebSocket), in front of
 * the app. It exists because `Deno.serve` gives a program no say before a request is complete:
 * it cannot count connections that have not sent a request, time out slow headers, or survive
 * running out of file descriptors, and it leaks the descriptor of every upgrade whose client
 * resets the connection before reading the 101 (see docs/DEPLOY.md, "What the runtime does").
 *
 * `node:http` over `node:net` gives the program every accepted socket, and Deno 2.9 can run its
 * native WebSocket over such a socket (`Deno.upgradeWebSocket(request, { socket, head })`), so
 * chat traffic takes the same path as under `Deno.serve`. The door:
 *
 * - counts every open TCP connection against a budget (pending ones per address as well) and
 *   closes the ones over it as soon as they are accepted, so that accept never runs out of
 *   descriptors;
 * - closes a connection that does not complete a request head within `headerTimeoutMs` after
 *   it opens or after its last response (slow headers, idle keep-alive);
 * - watches its own accept loop: Deno's `node:net` stops accepting for good after one
 *   "Too many open files" without telling anyone, so when nothing was accepted for a while the
 *   door connects to itself, and if that connection is not accepted it listens again, learns
 *   the descriptor ceiling it hit, and stays under it from then on.
 */

import { addressGroup, canonical } from "./address.ts";
import http from "node:http";
import net from "node:net";
import type { App, DoorStatus } from "./app.ts";

export type { DoorStatus } from "./app.ts";
import type { Fields, Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";

/** What the door needs to know. */
export interface DoorOptions {
  port: number;
  /** Interface to listen on: an address or name; "::" for every interface. */
  hostname: string;
  /** Milliseconds a connection may take to send a request head (and sit idle between requests). */
  headerTimeoutMs: number;
  /** Connections that are not (yet) WebSockets, in all and per address. */
  maxPending: number;
  maxPendingPerAddress: number;
  /** Open TCP connections in all; undefined: the chat cap plus `maxPending`. */
  maxSockets?: number;
  log: Logger;
  /** How often the accept loop is checked, in milliseconds. */
  watchMs?: number;
}

/** What `/healthz` and `/metrics` show of the door. */
/** A listening door: its address, its status, and how to close it. */
export interface Door {
  readonly addr: Deno.NetAddr;
  status(): DoorStatus;
  close(): Promise<void>;
}

/** Descriptors kept free for everything else (the store, Redis, the door's own probe). */
const RESERVE = 32;
/** A learned descriptor ceiling holds this long, then the budget rises by RESERVE per step. */
const RELEARN_MS = 60_000;
const RELEARN_STEP_MS = 5_000;
/** How long a problem keeps `/healthz` degraded after it was last seen. */
const TROUBLE_MS = 10_000;
/** How often the same warning may be logged. */
const LOG_EVERY_MS = 10_000;
/** How long the door waits for its own probe connection to be accepted. */
const PROBE_MS = 1500;
/** The reason phrases the door writes itself. */
const PHRASES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  426: "Upgrade Required",
  429: "Too Many Requests",
  503: "Service Unavailable",
};

/** Per-connection state, on the socket itself (one object per connection, no maps). */
interface Tracked {
  address: string;
  port: number;
  /** Counted as pending (not yet upgraded). */
  pending: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}
const TRACKED = Symbol("natter.door");
type TrackedSocket = net.Socket & { [TRACKED]?: Tracked | undefined };

/** Headers of a `node:http` request, as a Fetch `Headers` (repeated fields kept). */
function headersOf(raw: string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

/** The headers an upgrade is decided on (lib/app.ts and the runtime read no others). */
const UPGRADE_HEADERS = [
  "host",
  "origin",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "authorization",
] as const;

/** Only those: copying every header into a Fetch `Headers` is a measurable part of a connect. */
function upgradeHeadersOf(parsed: http.IncomingHttpHeaders): Headers {
  const pairs: [string, string][] = [];
  for (const name of UPGRADE_HEADERS) {
    const value = parsed[name];
    if (typeof value === "string") pairs.push([name, value]);
  }
  return new Headers(pairs);
}

/** Opens the door for `app` and resolves once it listens. Rejects as `Deno.serve` would throw. */
export async function openDoor(app: App, options: DoorOptions): Promise<Door> {
  const { log, headerTimeoutMs } = options;
  const metrics = app.metrics;
  const perAddress = new Map<string, number>();
  /** Connections that are not WebSockets (yet), oldest first: what a stall sheds. */
  const waiting = new Set<TrackedSocket>();
  let sockets = 0;
  let pending = 0;
  let accepted = 0;
  /** Open connections after the last accept: the ceiling, when the next accept fails. */
  let atLastAccept = 0;
  const configured = options.maxSockets ?? app.options.maxConnections + options.maxPending;
  let budget = configured;
  /**
   * When the budget was last lowered to a learned descriptor ceiling. Descriptors are shared
   * with the rest of the process (files, Redis, a raised limit), so a learned ceiling is not for
   * good: after {@link RELEARN_MS} without running out again, the budget rises back step by
   * step, and running out again teaches it anew.
   */
  let learnedAt = -Infinity;
  let troubleAt = -Infinity;
  let trouble: string | undefined;
  const lastLogged = new Map<string, number>();
  let closed = false;

  /**
   * Logs at most once per LOG_EVERY_MS per kind. Trouble of the server's own (descriptors, a
   * stalled listener) also makes /healthz degraded for a while; what one client can cause (a
   * full waiting room) does not, or one client could take an instance out of its load balancer.
   */
  function warn(kind: string, message: string, fields: Fields, serious = true): void {
    const now = Date.now();
    if (serious) {
      trouble = kind;
      troubleAt = now;
    }
    if (now - (lastLogged.get(kind) ?? -Infinity) < LOG_EVERY_MS) return;
    lastLogged.set(kind, now);
    log.warn(message, fields);
  }

  function refuse(socket: net.Socket, reason: string): void {
    Metrics.bump(metrics.refused, reason);
    socket.destroy();
  }

  function release(state: Tracked): void {
    if (!state.pending) return;
    state.pending = false;
    pending--;
    const group = addressGroup(state.address);
    const left = (perAddress.get(group) ?? 1) - 1;
    if (left > 0) perAddress.set(group, left);
    else perAddress.delete(group);
  }

  /** (Re)starts the wait for a request head; a connection that sends none is closed. */
  function awaitHead(socket: TrackedSocket, state: Tracked): void {
    clearTimeout(state.timer);
    if (!state.pending) return; // upgraded since: the WebSocket's own timeouts apply
    state.timer = setTimeout(() => {
      if (!state.pending) return;
      Metrics.bump(metrics.refused, "header_timeout");
      socket.destroy();
    }, headerTimeoutMs);
  }

  function onConnection(raw: net.Socket): void {
    const socket = raw as TrackedSocket;
    accepted++;
    socket.on("error", () => {}); // resets and broken pipes end in "close"
    if (closed) return void socket.destroy();
    if (sockets >= budget) {
      warn("descriptors", "too many open connections: new ones are closed at once", {
        open: sockets,
        budget,
      });
      return refuse(socket, "descriptors");
    }
    const address = canonical(socket.remoteAddress);
    const group = addressGroup(address);
    const mine = perAddress.get(group) ?? 0;
    // The per-address share applies only once the waiting room is half full: a proxy or a big
    // NAT (one address for many clients) may reconnect hundreds at once, and a lone address
    // may not fill the room on its own.
    const crowded = pending >= options.maxPending / 2;
    if (pending >= options.maxPending || (crowded && mine >= options.maxPendingPerAddress)) {
      warn("pending", "too many connections waiting to send a request", {
        address,
        pending,
        fromAddress: mine,
      }, false);
      return refuse(socket, pending >= options.maxPending ? "pending" : "pending_per_address");
    }
    sockets++;
    pending++;
    atLastAccept = sockets;
    perAddress.set(group, mine + 1);
    const state: Tracked = {
      address,
      port: socket.remotePort ?? 0,
      pending: true,
      timer: undefined,
    };
    socket[TRACKED] = state;
    waiting.add(socket);
    socket.setNoDelay(true);
    awaitHead(socket, state);
    socket.once("close", () => {
      clearTimeout(state.timer);
      waiting.delete(socket);
      // An upgraded socket's close is reported by its WebSocket, not here: its count is
      // handed back in onUpgrade's hook below.
      if (state.pending) {
        release(state);
        sockets--;
      }
    });
  }

  /** A request head has arrived: stop its timer; the Fetch request and its client's address. */
  function arrived(request: http.IncomingMessage, socket: TrackedSocket, method: string) {
    const state = socket[TRACKED];
    if (state) clearTimeout(state.timer);
    // From accept time: a socket that was reset since has no address any more.
    const remote: Deno.NetAddr = {
      transport: "tcp",
      hostname: state?.address ?? canonical(socket.remoteAddress),
      port: state?.port ?? socket.remotePort ?? 0,
    };
    const url = `http://${request.headers.host ?? "localhost"}${request.url ?? "/"}`;
    const headers = method === "GET" && request.headers.upgrade !== undefined
      ? upgradeHeadersOf(request.headers)
      : headersOf(request.rawHeaders);
    const fetchRequest = new Request(url, { method, headers });
    return { state, remote, fetchRequest };
  }

  async function onRequest(request: http.IncomingMessage, response: http.ServerResponse) {
    const socket = request.socket as TrackedSocket;
    let answer: Response;
    // Read first: whatever happens below, the connection waits for its next head on a timer.
    const state = socket[TRACKED];
    try {
      const head = arrived(request, socket, request.method ?? "GET");
      answer = app.fetch(head.fetchRequest, {
        remoteAddr: head.remote,
        completed: Promise.resolve(),
      });
    } catch {
      answer = new Response("Bad Request\n", { status: 400 });
    }
    // Only GET and HEAD are served: a request with a body is answered and the connection
    // closed, rather than reading a body nobody asked for.
    const body = request.method === "HEAD" || answer.body === null
      ? undefined
      : new Uint8Array(await answer.arrayBuffer());
    const headers: Record<string, string> = {};
    answer.headers.forEach((value, name) => headers[name] = value);
    if (body !== undefined) headers["content-length"] = String(body.length);
    const keep = request.method === "GET" || request.method === "HEAD";
    if (!keep) headers["connection"] = "close";
    response.writeHead(answer.status, headers);
    response.end(body);
    if (state && keep) response.once("finish", () => awaitHead(socket, state));
    else if (state) awaitHead(socket, state); // closing: the timer ends it if the client does not
  }

  function onUpgrade(request: http.IncomingMessage, raw: net.Socket, head: Uint8Array): void {
    const socket = raw as TrackedSocket;
    // The socket's native handle: the runtime keeps it alive for good once the WebSocket has
    // taken the connection over, and through it the node socket and all that reaches (about
    // 6 KiB a connection; tests/runtime_test.ts). Taken before upgrading: the upgrade detaches
    // it from the socket.
    const handle = (socket as unknown as { _handle?: NativeHandle })._handle;
    // Nothing may read the connection but the WebSocket from here on.
    try {
      handle?.readStop?.();
    } catch {
      // not reading
    }
    const state = socket[TRACKED];
    let outcome;
    try {
      const { remote, fetchRequest } = arrived(request, socket, "GET");
      outcome = app.upgradeOver(fetchRequest, remote, socket, head);
    } catch {
      outcome = new Response("Bad WebSocket upgrade\n", { status: 400 });
    }
    if (outcome instanceof Response) return void writeRefusal(socket, outcome);
    // Upgraded: the socket now belongs to the WebSocket. It stops being pending; it stays
    // counted until the chat connection is gone (or its handshake failed).
    if (state) release(state);
    waiting.delete(socket);
    // A client that resets before it reads the 101 never opens: its node socket closes. Once
    // the WebSocket is open (or gone) the node socket is no longer ours to watch: drop every
    // reference from it, or each connection would stay reachable after it ends.
    const abandon = () => outcome.abandon();
    const forget = () => {
      socket.off("close", abandon);
      socket[TRACKED] = undefined; // not `delete`: it would slow every access to the socket
    };
    socket.once("close", abandon);
    outcome.whenOpen(() => {
      forget();
      closeHandle(handle);
    });
    outcome.whenGone(() => {
      forget();
      sockets--;
      closeHandle(handle);
    });
  }

  const server = () => {
    const s = http.createServer({ maxHeaderSize: 16 * 1024 });
    // Idle keep-alive connections get the same time as a slow head (node's own default is 5 s).
    s.keepAliveTimeout = headerTimeoutMs;
    s.on("connection", onConnection);
    s.on("request", (request, response) => {
      onRequest(request, response).catch(() => response.destroy());
    });
    s.on("upgrade", onUpgrade);
    // What the parser refuses (not HTTP, headers over 16 KiB) gets a status line, then the end.
    s.on("clientError", (error: NodeJS.ErrnoException, socket: net.Socket) => {
      if (socket.writable && error.code !== "ECONNRESET") {
        const status = error.code === "HPE_HEADER_OVERFLOW"
          ? "431 Request Header Fields Too Large"
          : "400 Bad Request";
        socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      }
      Deno.unrefTimer(setTimeout(() => socket.destroy(), 1000));
    });
    return s;
  };

  let current = server();
  /** Listens on `port` (0 the first time, for "any"); the same port again after a stall. */
  const listen = (s: http.Server, port: number) =>
    new Promise<Deno.NetAddr>((resolve, reject) => {
      const failed = (error: Error) => {
        clearTimeout(timer);
        reject(error);
      };
      // Out of descriptors, a listen may never answer at all: give up on it and try again.
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        s.close();
        failed(new Error("listen timed out"));
      }, 2000);
      s.once("error", failed);
      s.listen({ port, host: options.hostname, exclusive: true }, () => {
        clearTimeout(timer);
        // Answered after we gave up on it: it must not stay bound beside the next attempt.
        if (late) return void s.close();
        s.off("error", failed);
        s.on("error", (error) => warn("listen", "listener error", { error: String(error) }));
        const address = s.address() as net.AddressInfo;
        resolve({ transport: "tcp", hostname: address.address, port: address.port });
      });
    });
  const addr = await listen(current, options.port);

  // The accept-loop watch: quiet stretches are checked with a connection to ourselves.
  // Where it listens on every interface, its own loopback of that family (on "::" with
  // IPv6-only sockets, 127.0.0.1 would be refused whether or not the loop works).
  const probeHost = addr.hostname === "::"
    ? "::1"
    : addr.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : addr.hostname;
  let seen = accepted;
  let relistening = false;
  async function relisten(why: string) {
    if (relistening || closed) return;
    relistening = true;
    // Deno's accept loop only stops on an error, in practice "Too many open files": the
    // ceiling is where the last accept left us. Stay under it from now on, with room to spare.
    const ceiling = Math.max(atLastAccept, sockets);
    budget = Math.min(budget, ceiling - Math.min(RESERVE, Math.ceil(ceiling / 4)));
    learnedAt = Date.now();
    warn(why, "the listener stopped accepting connections: listening again", {
      reason: why,
      open: sockets,
      budget,
    });
    metrics.acceptStalls++;
    // Make room at once: the newest connections that have not sent a request go first, so
    // that the new listener and its accepts have descriptors to work with.
    const newest = [...waiting].reverse();
    for (const socket of newest) {
      if (sockets <= budget) break;
      Metrics.bump(metrics.refused, "descriptors");
      socket.destroy();
      waiting.delete(socket);
      const state = socket[TRACKED];
      if (state?.pending) {
        release(state);
        sockets--;
      }
    }
    const old = current;
    old.close();
    for (let attempt = 0; !closed; attempt++) {
      const next = server();
      try {
        await listen(next, addr.port);
        if (closed) {
          next.close();
          break;
        }
        log.info("listening again", { port: addr.port });
        current = next;
        break;
      } catch (error) {
        warn("descriptors", "cannot listen again yet", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
    seen = accepted;
    relistening = false;
  }
  function probe(): void {
    const before = accepted;
    let settled = false;
    const done = (stalled: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.destroy();
      if (stalled !== undefined && accepted === before) relisten(stalled);
    };
    const client = net.connect({ port: addr.port, host: probeHost });
    const timer = setTimeout(() => done("stalled"), PROBE_MS);
    client.on("error", (error: NodeJS.ErrnoException) => {
      // Out of descriptors ourselves; or refused: nothing listens there any more.
      const code = error.code;
      done(
        code === "EMFILE" || code === "ENFILE"
          ? "descriptors"
          : code === "ECONNREFUSED" && probeHost === addr.hostname
          ? "stalled"
          : undefined,
      );
    });
    client.on("connect", () => {
      // Accepted (or not) shortly: give the loop a moment to see it.
      setTimeout(() => done(accepted > before ? undefined : "stalled"), PROBE_MS);
    });
  }
  const watch = setInterval(() => {
    if (relistening) return;
    if (accepted !== seen) seen = accepted;
    else probe();
    const now = Date.now();
    if (now - troubleAt > TROUBLE_MS) trouble = undefined;
    if (budget < configured && now - learnedAt > RELEARN_MS) {
      budget = Math.min(configured, budget + RESERVE);
      learnedAt = now - RELEARN_MS + RELEARN_STEP_MS;
    }
  }, options.watchMs ?? 1000);
  Deno.unrefTimer(watch);

  return {
    addr,
    status: () => ({
      sockets,
      pending,
      budget,
      trouble: Date.now() - troubleAt < TROUBLE_MS ? trouble : undefined,
    }),
    close() {
      closed = true;
      clearInterval(watch);
      // Not waiting for the server's "close": it counts upgraded sockets that never report
      // closing (they belong to their WebSockets), so it would not come.
      current.close();
      return Promise.resolve();
    },
  };
}

/**
 * Closes a native socket handle the runtime would otherwise keep for good, with the node socket
 * and all it reaches, and the connection's descriptor with it (the client then waits seconds
 * for the end of a connection whose close handshake is long done).
 */
function closeHandle(handle: NativeHandle | undefined): void {
  try {
    handle?.readStop?.();
    handle?.close?.();
  } catch {
    // already closed
  }
}

/** What the door uses of a `node:net` socket's native handle. */
interface NativeHandle {
  readStop?: () => void;
  close?: () => void;
}

/** Writes a refusal on a socket that asked to upgrade, then closes it. */
function writeRefusal(socket: net.Socket, response: Response): void {
  response.text().then((body) => {
    const head = [`HTTP/1.1 ${response.status} ${PHRASES[response.status] ?? "Error"}`];
    response.headers.forEach((value, name) => head.push(`${name}: ${value}`));
    const bytes = new TextEncoder().encode(body);
    head.push(`content-length: ${bytes.length}`, "connection: close", "", "");
    socket.write(new TextEncoder().encode(head.join("\r\n")));
    socket.end(bytes);
  }).catch(() => socket.destroy());
  // A peer that does not read its refusal does not keep the socket.
  Deno.unrefTimer(setTimeout(() => socket.destroy(), 2000));
}
