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

import { canonical } from "../base/address.ts";
import http from "node:http";
import type net from "node:net";
import type { App, DoorStatus, Upgraded } from "../app.ts";

export type { DoorStatus } from "../app.ts";
import { DoorBudget, refuse, TRACKED, type Tracked, type TrackedSocket } from "./budget.ts";
import { answerClientError, readBody, requestOf, writeRefusal } from "./http.ts";
import { apiBodyLimit } from "../transport/api.ts";
import { Listener } from "./listener.ts";
import { Deadlines } from "../base/deadlines.ts";
import { DoorTrouble } from "./trouble.ts";
import type { Logger } from "../base/log.ts";

/**
 * Requests one connection may have waiting for their answers: a client may pipeline requests,
 * but one that sends thousands and reads none of the answers made the process hold every answer
 * (about 25 KiB each in the runtime's `node:http`: 700 KB of requests grew it by 500 MiB). Past
 * this the connection is closed. Browsers do not pipeline at all.
 */
export const MAX_UNANSWERED = 32;

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

/** A listening door: its address, its status, and how to close it. */
export interface Door {
  readonly addr: Deno.NetAddr;
  status(): DoorStatus;
  close(): Promise<void>;
}

/** Opens the door for `app` and resolves once it listens. Rejects as `Deno.serve` would throw. */
export async function openDoor(app: App, options: DoorOptions): Promise<Door> {
  const { log, headerTimeoutMs } = options;
  const metrics = app.metrics;
  const books = new DoorBudget(
    options.maxSockets ?? app.options.maxConnections + options.maxPending,
    options.maxPending,
    options.maxPendingPerAddress,
  );
  const trouble = new DoorTrouble(log);
  let closed = false;

  /** Connections waiting for a request head: one that sends none in time is closed. */
  const heads = new Deadlines<TrackedSocket>(headerTimeoutMs, (socket) => {
    if (socket[TRACKED]?.pending) refuse(metrics, socket, "header_timeout");
  });

  /** (Re)starts the wait for a request head. */
  function awaitHead(socket: TrackedSocket, state: Tracked): void {
    // Upgraded since: the WebSocket's own timeouts apply.
    if (state.pending) heads.arm(socket);
    else heads.disarm(socket);
  }

  function onConnection(raw: net.Socket): void {
    const socket = raw as TrackedSocket;
    books.accepted++;
    socket.on("error", () => {}); // resets and broken pipes end in "close"
    if (closed) return void socket.destroy();
    if (books.full) {
      trouble.warn("descriptors", "too many open connections: new ones are closed at once", {
        open: books.sockets,
        budget: books.budget,
      });
      return refuse(metrics, socket, "descriptors");
    }
    const address = canonical(socket.remoteAddress);
    const state = books.admit(socket, address);
    if ("refused" in state) {
      trouble.warn("pending", "too many connections waiting to send a request", {
        address,
        pending: books.pending,
        fromAddress: state.fromAddress,
      }, false);
      return refuse(metrics, socket, state.refused);
    }
    socket.setNoDelay(true);
    awaitHead(socket, state);
    socket.once("close", () => {
      heads.disarm(socket);
      // An upgraded socket's close is reported by its WebSocket, not here: its count is
      // handed back in onUpgrade's hook below.
      books.closed(socket, state);
    });
  }

  /** A request head has arrived: stop its wait; the Fetch request and its client's address. */
  function arrived(request: http.IncomingMessage, socket: TrackedSocket, method: string) {
    const state = socket[TRACKED];
    heads.disarm(socket);
    // From accept time: a socket that was reset since has no address any more.
    const remote: Deno.NetAddr = {
      transport: "tcp",
      hostname: state?.address ?? canonical(socket.remoteAddress),
      port: state?.port ?? socket.remotePort ?? 0,
    };
    const fetchRequest = requestOf(request, method);
    return { state, remote, fetchRequest };
  }

  async function onRequest(request: http.IncomingMessage, response: http.ServerResponse) {
    const socket = request.socket as TrackedSocket;
    let answer: Response;
    // Read first: whatever happens below, the connection waits for its next head again.
    const state = socket[TRACKED];
    if (state && ++state.unanswered > MAX_UNANSWERED) {
      // Requests it had sent already still come out of the parser: one refusal counts.
      if (!socket.destroyed) refuse(metrics, socket, "unanswered");
      return;
    }
    if (state) response.once("close", () => state.unanswered--);
    const method = request.method ?? "GET";
    // The server API's requests carry a body (bounded, and timed like a head); no other does.
    const withBody = app.options.apiKey !== undefined && method !== "GET" && method !== "HEAD" &&
      (request.url ?? "").startsWith("/api/");
    let bodyRead = false;
    try {
      const head = arrived(request, socket, method);
      let fetchRequest = head.fetchRequest;
      let bytes: Uint8Array<ArrayBuffer> | undefined;
      if (withBody) {
        const limit = apiBodyLimit(app.options.maxMessageBytes);
        bytes = await readBody(request, limit, headerTimeoutMs);
        bodyRead = bytes !== undefined;
        if (bytes) fetchRequest = new Request(fetchRequest, { body: bytes });
      }
      answer = withBody && !bytes
        ? Response.json({
          error: { code: "too_long", message: "the body is too long, or did not come in time" },
        }, { status: 413 })
        : await app.fetch(fetchRequest, { remoteAddr: head.remote, completed: Promise.resolve() });
    } catch {
      answer = new Response("Bad Request\n", { status: 400 });
    }
    // Only GET and HEAD (and the API's bodies, read whole) are served: another request with a
    // body is answered and the connection closed, rather than reading a body nobody asked for.
    const body = request.method === "HEAD" || answer.body === null
      ? undefined
      : new Uint8Array(await answer.arrayBuffer());
    const headers: Record<string, string> = {};
    answer.headers.forEach((value, name) => headers[name] = value);
    if (body !== undefined) headers["content-length"] = String(body.length);
    const keep = method === "GET" || method === "HEAD" || bodyRead;
    if (!keep) headers["connection"] = "close";
    response.writeHead(answer.status, headers);
    response.end(body);
    if (state && keep) response.once("finish", () => awaitHead(socket, state));
    else if (state) awaitHead(socket, state); // closing: the wait ends it if the client does not
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
    // Where tokens are verified, the answer comes a moment later.
    if (outcome instanceof Promise) {
      outcome.then(
        (settled) => settle(socket, state, handle, settled),
        () =>
          settle(socket, state, handle, new Response("Bad WebSocket upgrade\n", { status: 400 })),
      );
    } else settle(socket, state, handle, outcome);
  }

  /** Writes an upgrade's refusal, or follows its WebSocket until it is gone. */
  function settle(
    socket: TrackedSocket,
    state: Tracked | undefined,
    handle: NativeHandle | undefined,
    outcome: Response | Upgraded,
  ): void {
    if (outcome instanceof Response) return void writeRefusal(socket, outcome);
    // Upgraded: the socket now belongs to the WebSocket. It stops being pending; it stays
    // counted until the chat connection is gone (or its handshake failed).
    books.upgraded(socket, state);
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
      books.webSocketGone();
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
    s.on("clientError", answerClientError);
    return s;
  };

  const listener = await Listener.open({
    server,
    port: options.port,
    hostname: options.hostname,
    watchMs: options.watchMs ?? 1000,
    books,
    trouble,
    metrics,
    log,
  });

  return {
    addr: listener.addr,
    status: () => ({
      sockets: books.sockets,
      pending: books.pending,
      budget: books.budget,
      trouble: trouble.current,
    }),
    close() {
      closed = true;
      // Connections still waiting to send a request are closed with the door, not left unwatched.
      for (const socket of heads.clear()) socket.destroy();
      listener.close();
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
