/**
 * Maps one Deno WebSocket onto the hub's {@link Connection} interface, and guards it:
 * the rate limit, the size cap and the slow-consumer cap live here, at the socket.
 */

import type { Connection, Hub, JoinRequest } from "./hub.ts";
import { TokenBucket } from "./limits.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { Outbox } from "./outbox.ts";
import { CloseCode, type Format, utf8Length } from "./protocol.ts";

let counter = 0;

/** What {@link attach} needs besides the socket. */
export interface AttachOptions {
  hub: Hub;
  format: Format;
  request: JoinRequest;
  /** The client's address, for logs. */
  address: string;
  maxMessageBytes: number;
  rateBurst: number;
  ratePerSecond: number;
  maxBufferedBytes: number;
  metrics: Metrics;
  log: Logger;
  /** Called once when the socket is gone (its close event), to release what it held. */
  onGone?: () => void;
}

/** How long a peer may stay over the buffer cap before it counts as too slow. */
const SLOW_GRACE_MS = 2000;
/** Past this many times the buffer cap, a peer is dropped at once: memory comes first. */
const SLOW_HARD_FACTOR = 8;

/** Frames this many times over the size cap are abuse, not a typo: the connection is closed. */
const ABUSIVE_SIZE_FACTOR = 64;

/**
 * Wires a freshly upgraded socket to the hub: it joins on open, its text frames go to
 * the hub (within the rate and size limits), and it leaves on close.
 */
export function attach(socket: WebSocket, options: AttachOptions): Connection {
  const { hub, metrics, log } = options;
  const id = `c${++counter}`;
  const rate = new TokenBucket(options.rateBurst, options.ratePerSecond);
  // Refusals drain a second bucket: a client that keeps flooding after being told is closed.
  const patience = new TokenBucket(options.rateBurst, options.ratePerSecond);
  const opened = performance.now();
  let closing: { code: number; reason: string } | undefined;
  let slowCheck: ReturnType<typeof setTimeout> | undefined;
  const tooSlow = () => {
    metrics.slowConsumers++;
    conn.close(CloseCode.tooSlow, "too slow: not reading");
  };
  let gone = false;
  /** Open and not yet closed: kept here so that the hot path never asks the socket. */
  let ready = false;

  // Deno buffers without bound for a peer that stops reading. A burst can pass the cap for a
  // moment even for a good reader, so a peer is dropped when it stays over the cap for
  // SLOW_GRACE_MS, or at once past SLOW_HARD_FACTOR times the cap. Queued and buffered
  // bytes count alike.
  const checkSlow = () => {
    const unsent = socket.bufferedAmount + outbox.queued;
    if (unsent <= options.maxBufferedBytes) return;
    if (unsent > options.maxBufferedBytes * SLOW_HARD_FACTOR) return tooSlow();
    slowCheck ??= setTimeout(() => {
      slowCheck = undefined;
      if (socket.bufferedAmount + outbox.queued > options.maxBufferedBytes) tooSlow();
    }, SLOW_GRACE_MS);
  };
  const outbox = new Outbox((frame) => {
    if (socket.readyState !== WebSocket.OPEN) return;
    metrics.messagesOut++;
    try {
      socket.send(frame);
    } catch {
      return conn.close(CloseCode.internalError, "send failed");
    }
    checkSlow();
  });

  const conn: Connection = {
    id,
    format: options.format,
    // Hot path: plain fields only. Socket getters are calls into the runtime, once per
    // delivery they would cost more than the delivery itself.
    get open() {
      return ready && closing === undefined;
    },
    send(event, bytes) {
      outbox.push(event, bytes);
      // The socket's own buffer is checked after each real write (in the outbox's sink).
      if (outbox.queued > options.maxBufferedBytes) checkSlow();
    },
    close(code, reason) {
      if (closing || socket.readyState >= WebSocket.CLOSING) return;
      closing = { code, reason };
      clearTimeout(slowCheck);
      // What was said before the close (an error, the shutdown notice) leaves before it.
      if (code !== CloseCode.tooSlow) {
        try {
          outbox.flush();
        } catch {
          // the socket is already failing; the close below still goes
        }
      }
      outbox.discard();
      try {
        socket.close(code, reason);
      } catch {
        // Not open yet: the upgrade failed, and the close event follows anyway.
      }
      // A peer that does not read may never complete the close handshake; leave the room now.
      queueMicrotask(() => hub.disconnect(conn));
    },
  };

  socket.onopen = () => {
    ready = true;
    metrics.connectionsOpened++;
    log.info("connected", { id, address: options.address, format: options.format });
    hub.connect(conn, options.request);
  };
  socket.onmessage = (event) => {
    if (closing) return;
    const data: unknown = event.data;
    const size = typeof data === "string"
      ? utf8Length(data)
      : (data as ArrayBuffer).byteLength ?? 0;
    metrics.messagesIn++;
    metrics.bytesIn += size;
    if (size > options.maxMessageBytes * ABUSIVE_SIZE_FACTOR) {
      return conn.close(CloseCode.tooBig, "message too big");
    }
    if (!rate.take()) {
      metrics.rateLimited++;
      if (!patience.take()) return conn.close(CloseCode.policy, "rate limit exceeded");
      return hub.reject(conn, {
        code: "rate_limited",
        message:
          `slow down: at most ${options.rateBurst} messages at once and ${options.ratePerSecond} a second`,
      });
    }
    if (typeof data === "string") hub.receive(conn, data);
    else {hub.reject(conn, {
        code: "binary",
        message: "binary frames are not supported: send text",
      });}
  };
  socket.onclose = (event) => {
    if (gone) return; // Deno may fire close twice
    gone = true;
    ready = false;
    clearTimeout(slowCheck);
    outbox.discard();
    const { code, reason } = closing ?? { code: event.code, reason: event.reason };
    Metrics.bump(metrics.closes, closeReason(code, closing !== undefined));
    log.info("disconnected", {
      id,
      address: options.address,
      code,
      reason: reason || undefined,
      seconds: Math.round((performance.now() - opened) / 100) / 10,
    });
    hub.disconnect(conn);
    options.onGone?.();
  };
  // An error is always followed by a close event, which does the cleanup.
  socket.onerror = () => {};
  return conn;
}

function closeReason(code: number, byServer: boolean): string {
  switch (code) {
    case CloseCode.tooSlow:
      return "too_slow";
    case CloseCode.policy:
      return "rate_limited";
    case CloseCode.tooBig:
      return "too_big";
    case CloseCode.goingAway:
      return byServer ? "shutdown" : "client_going_away";
    case CloseCode.internalError:
      return "send_failed";
    case CloseCode.normal:
      return byServer ? "quit" : "client_closed";
    case 1006:
      return "abnormal";
    default:
      return byServer ? "server" : "client_closed";
  }
}
