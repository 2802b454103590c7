/**
 * Maps one Deno WebSocket onto the hub's {@link Connection} interface, and guards it:
 * the rate limit, the size cap and the slow-consumer cap live here, at the socket.
 */

import type { Hub } from "../chat/hub.ts";
import type { JoinRequest } from "../chat/join.ts";
import type { Connection } from "../chat/room.ts";
import { TokenBucket } from "../base/limits.ts";
import type { Logger } from "../base/log.ts";
import { Metrics } from "../base/metrics.ts";
import { type Cast, Outbox, SEND_AT_BYTES, type Turns } from "./outbox.ts";
import type { Deadlines } from "../base/deadlines.ts";
import { CloseCode, type Format, refIn, utf8Length } from "../protocol/protocol.ts";

let counter = 0;
/**
 * Connection ids are unique within a process; the workers of `deno serve --parallel` each count
 * from 1, so each adds a tag of its own (`c12.3fa9`) and their log lines never name one id twice.
 */
const PROCESS_TAG = `.${
  crypto.getRandomValues(new Uint16Array(1))[0]!.toString(16).padStart(4, "0")
}`;

/** What every connection shares: the hub, the limits, where to count and log. */
export interface SocketSettings {
  hub: Hub;
  maxMessageBytes: number;
  rateBurst: number;
  ratePerSecond: number;
  maxBufferedBytes: number;
  metrics: Metrics;
  log: Logger;
  /** The app's turns: when queued frames leave (lib/transport/outbox.ts). */
  turns: Turns;
  /** Upgrades waiting to open: one not open within {@link OPEN_DEADLINE_MS} is abandoned. */
  opening: Deadlines<SocketConnection>;
  /**
   * Called once per connection when its socket is gone (its close event, or a handshake that
   * never completed), to release what it held.
   */
  onGone?: (conn: SocketConnection) => void;
}

/** What one connection brings: its format, its client's address, what it asked to join. */
export interface SocketOrigin {
  format: Format;
  /** The client's address, for logs and per-address caps. */
  address: string;
  request: JoinRequest;
}

/** How long a peer may stay over the buffer cap before it counts as too slow. */
const SLOW_GRACE_MS = 2000;
/** Past this many times the buffer cap, a peer is dropped at once: memory comes first. */
const SLOW_HARD_FACTOR = 8;

/** How long a flooder's refusals travel before it is closed: they must reach it first. */
const TELL_MS = 250;

/** Characters a connection may be written between looks at its socket's buffer (see #write). */
const CHECK_EVERY = 16 * 1024;

/** Frames this many times over the size cap are abuse, not a typo: the connection is closed. */
const ABUSIVE_SIZE_FACTOR = 64;

/**
 * How long an upgrade may take to open. The runtime fires no event at all for a client that
 * resets the connection before it reads the 101 (see tests/runtime_test.ts); past this, the
 * connection counts as abandoned and its slot is freed.
 */
export const OPEN_DEADLINE_MS = 10_000;

/**
 * One WebSocket as the hub's {@link Connection}. A class rather than closures: thousands of
 * idle connections each cost one object, its outbox and its two rate buckets, with the socket's
 * events delivered to {@link handleEvent} (measured: closures and their scopes were about
 * 1.5 KiB of heap per connection).
 */
export class SocketConnection implements Connection {
  readonly id = `c${++counter}${PROCESS_TAG}`;
  readonly format: Format;
  readonly address: string;
  readonly #socket: WebSocket;
  readonly #settings: SocketSettings;
  /** What the client asked for; kept only until it joins. */
  #request: JoinRequest | undefined;
  readonly #rate: TokenBucket;
  /** Refusals drain a second bucket: a client that keeps flooding after being told is closed. */
  readonly #patience: TokenBucket;
  /** When the current run of refusals began, and when the last one went. */
  #firstRefusal = -Infinity;
  #lastRefusal = -Infinity;
  /** The close of a flooder, once its refusals have had time to reach it. */
  #policyClose: ReturnType<typeof setTimeout> | undefined;
  readonly #outbox: Outbox;
  readonly #opened = performance.now();
  #closing: { code: number; reason: string } | undefined;
  #slowCheck: ReturnType<typeof setTimeout> | undefined;
  #gone = false;
  /** Characters written since the socket last said it held nothing unsent. */
  #unchecked = 0;
  /** Open and not yet closed: kept here so that the hot path never asks the socket. */
  #ready = false;
  /** Set when natter dropped it for not reading: the kernel may still hold its unsent data. */
  droppedAsSlow = false;
  /** Called once when the connection is gone, after `onGone` (the listener's own count). */
  whenGone: (() => void) | undefined;
  /** Called once when the socket opens (the listener stops watching its handshake). */
  whenOpen: (() => void) | undefined;

  constructor(socket: WebSocket, settings: SocketSettings, origin: SocketOrigin) {
    this.#socket = socket;
    this.#settings = settings;
    this.format = origin.format;
    this.address = origin.address;
    this.#request = origin.request;
    this.#rate = new TokenBucket(settings.rateBurst, settings.ratePerSecond);
    this.#patience = new TokenBucket(settings.rateBurst, settings.ratePerSecond);
    // One lane per format: a room's text and JSON lines each go into their own turn log.
    this.#outbox = new Outbox(
      settings.turns,
      (frame) => this.#write(frame),
      origin.format === "json" ? 1 : 0,
    );
    socket.addEventListener("open", this);
    socket.addEventListener("message", this);
    // An error is always followed by a close event, which does the cleanup.
    socket.addEventListener("close", this);
    settings.opening.arm(this); // frees the slot of an upgrade that never opens
  }

  /**
   * Gives up on a handshake that never opened (its client went away before reading the 101):
   * frees what it holds. Does nothing once the socket has opened or is gone.
   */
  abandon(): void {
    if (this.#ready || this.#gone) return;
    this.#gone = true;
    this.#settings.opening.disarm(this);
    this.#outbox.discard();
    try {
      this.#socket.close();
    } catch {
      // nothing to close
    }
    const { metrics, log } = this.#settings;
    metrics.upgradesAbandoned++;
    log.info("upgrade abandoned", { id: this.id, address: this.address });
    this.#release();
  }

  #release(): void {
    this.#settings.onGone?.(this);
    this.whenGone?.();
    this.whenGone = this.whenOpen = undefined;
  }

  // Hot path: plain fields only. Socket getters are calls into the runtime, once per
  // delivery they would cost more than the delivery itself.
  get open(): boolean {
    return this.#ready && this.#closing === undefined;
  }

  send(event: string, bytes: number, stream?: object): void {
    this.#outbox.push(event, bytes, stream);
    // The socket's own buffer is checked after each real write (in #write).
    if (this.#outbox.queued > this.#settings.maxBufferedBytes) this.#checkSlow();
  }

  follow(stream: object): Cast | undefined {
    // A follower's queue is not checked per event: it leaves at SEND_AT_BYTES, and a cap below
    // twice that would be passed before the socket's buffer is looked at.
    if (!this.open || this.#settings.maxBufferedBytes < 2 * SEND_AT_BYTES) return undefined;
    return this.#outbox.follow(stream);
  }

  unfollow(): void {
    this.#outbox.unfollow();
  }

  close(code: number, reason: string): void {
    const socket = this.#socket;
    if (this.#closing || socket.readyState >= WebSocket.CLOSING) return;
    this.#closing = { code, reason };
    clearTimeout(this.#slowCheck);
    clearTimeout(this.#policyClose);
    // What was said before the close (an error, the shutdown notice) leaves before it.
    if (code !== CloseCode.tooSlow) {
      try {
        this.#outbox.flush();
      } catch {
        // the socket is already failing; the close below still goes
      }
    }
    this.#outbox.discard();
    try {
      // A close reason is at most 123 bytes of UTF-8; a longer one would make close() throw
      // and leave the socket open.
      socket.close(code, fitReason(reason));
    } catch {
      // Not open yet: the upgrade failed, and the close event follows anyway.
    }
    // A peer that does not read may never complete the close handshake; leave the room now.
    queueMicrotask(() => this.#settings.hub.disconnect(this));
  }

  /** The socket's events (this object is their listener). */
  handleEvent(event: Event): void {
    switch (event.type) {
      case "open":
        return this.#onOpen();
      case "message":
        return this.#onMessage(event as MessageEvent);
      case "close":
        return this.#onClose(event as CloseEvent);
    }
  }

  #write(frame: string): void {
    const socket = this.#socket;
    if (socket.readyState !== WebSocket.OPEN) return;
    this.#settings.metrics.messagesOut++;
    try {
      socket.send(frame);
    } catch {
      return this.close(CloseCode.internalError, "send failed");
    }
    // Asking the socket how much it holds is a call into the runtime: a reader that keeps up
    // is asked once per CHECK_EVERY characters written, one that has fallen behind every time.
    this.#unchecked += frame.length;
    // A quarter of the cap at most: a character is up to 3 bytes.
    if (this.#unchecked >= Math.min(CHECK_EVERY, this.#settings.maxBufferedBytes / 12)) {
      this.#checkSlow();
    }
  }

  #tooSlow(): void {
    this.#settings.metrics.slowConsumers++;
    this.droppedAsSlow = true;
    this.close(CloseCode.tooSlow, "too slow: not reading");
  }

  /**
   * Deno buffers without bound for a peer that stops reading. A burst can pass the cap for a
   * moment even for a good reader, so a peer is dropped when it stays over the cap for
   * SLOW_GRACE_MS, or at once past SLOW_HARD_FACTOR times the cap. Queued and buffered
   * bytes count alike.
   */
  #checkSlow(): void {
    const cap = this.#settings.maxBufferedBytes;
    const buffered = this.#socket.bufferedAmount;
    if (buffered === 0) this.#unchecked = 0;
    const unsent = buffered + this.#outbox.queued;
    if (unsent <= cap) return;
    if (unsent > cap * SLOW_HARD_FACTOR) return this.#tooSlow();
    this.#slowCheck ??= setTimeout(() => {
      this.#slowCheck = undefined;
      if (this.#socket.bufferedAmount + this.#outbox.queued > cap) this.#tooSlow();
    }, SLOW_GRACE_MS);
  }

  #onOpen(): void {
    const { metrics, log, hub } = this.#settings;
    if (this.#gone) return; // abandoned: too late
    this.#settings.opening.disarm(this);
    this.#ready = true;
    this.whenOpen?.();
    this.whenOpen = undefined;
    metrics.connectionsOpened++;
    log.info("connected", { id: this.id, address: this.address, format: this.format });
    const request = this.#request;
    this.#request = undefined;
    hub.connect(this, request);
  }

  #onMessage(event: MessageEvent): void {
    if (this.#closing) return;
    const settings = this.#settings;
    const metrics = settings.metrics;
    const data: unknown = event.data;
    const size = typeof data === "string"
      ? utf8Length(data)
      : (data as ArrayBuffer).byteLength ?? 0;
    metrics.messagesIn++;
    metrics.bytesIn += size;
    if (size > settings.maxMessageBytes * ABUSIVE_SIZE_FACTOR) {
      return this.close(CloseCode.tooBig, "message too big");
    }
    if (!this.#rate.take()) {
      metrics.rateLimited++;
      const now = performance.now();
      if (!this.#patience.take()) {
        // Closed once its refusals have had TELL_MS to reach it: a close right behind them
        // would overtake them (a peer that is still sending gets a reset, which discards
        // what it has not read yet). Until then, what it sends is dropped without a reply.
        const wait = this.#firstRefusal + TELL_MS - now;
        if (wait <= 0) return this.close(CloseCode.policy, "rate limit exceeded");
        this.#policyClose ??= setTimeout(
          () => this.close(CloseCode.policy, "rate limit exceeded"),
          wait,
        );
        return;
      }
      if (now - this.#lastRefusal > TELL_MS) this.#firstRefusal = now;
      this.#lastRefusal = now;
      // Which message was refused, for a client that numbers them (the page marks it).
      const ref = this.format === "json" && typeof data === "string" ? refIn(data) : undefined;
      return settings.hub.reject(this, {
        code: "rate_limited",
        message:
          `slow down: at most ${settings.rateBurst} messages at once and ${settings.ratePerSecond} a second`,
        ...(ref === undefined ? {} : { ref }),
      });
    }
    if (typeof data === "string") settings.hub.receive(this, data);
    else {
      settings.hub.reject(this, {
        code: "binary",
        message: "binary frames are not supported: send text",
      });
    }
  }

  #onClose(event: CloseEvent): void {
    if (this.#gone) return; // Deno may fire close twice
    this.#gone = true;
    this.#ready = false;
    this.#settings.opening.disarm(this);
    clearTimeout(this.#slowCheck);
    clearTimeout(this.#policyClose);
    this.#outbox.discard();
    const { metrics, log, hub } = this.#settings;
    const closing = this.#closing;
    // A peer gone without a close frame (a killed REPL) reports code 0 here: 1006 is its name.
    const { code, reason } = closing ??
      { code: event.code === 0 ? 1006 : event.code, reason: event.reason };
    Metrics.bump(metrics.closes, closeReason(code, closing !== undefined));
    log.info("disconnected", {
      id: this.id,
      address: this.address,
      code,
      reason: reason || undefined,
      seconds: Math.round((performance.now() - this.#opened) / 100) / 10,
    });
    // Gone without a goodbye (a reload says 1001, a lost network nothing): a page's member may
    // stay for the reload grace. A close we started, or a clean one (/quit, ws.close()), may not.
    hub.disconnect(this, closing === undefined && (code === 1001 || code === 1006));
    this.#release();
  }

  /** What it holds unsent, in bytes (asks the socket: not for the hot path). */
  get unsent(): number {
    return this.#outbox.queued + (this.#ready ? this.#socket.bufferedAmount : 0);
  }

  /** Drops it to relieve memory (the server is over its budget). */
  shed(): void {
    this.#settings.metrics.shed++;
    this.close(CloseCode.tryAgainLater, "server over its memory budget");
  }
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
    case CloseCode.tryAgainLater:
      return "memory";
    case CloseCode.normal:
      return byServer ? "quit" : "client_closed";
    case 1006:
      return "abnormal";
    default:
      return byServer ? "server" : "client_closed";
  }
}

/** A close reason cut to the 123 bytes of UTF-8 a close frame holds, on a character boundary. */
export function fitReason(reason: string): string {
  if (reason.length <= 41) return reason; // 41 characters are at most 123 bytes
  let bytes = 0;
  let end = 0;
  for (const char of reason) {
    const size = new TextEncoder().encode(char).length;
    if (bytes + size > 123) break;
    bytes += size;
    end += char.length;
  }
  return reason.slice(0, end);
}
