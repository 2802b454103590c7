/**
 * The door's listening socket (lib/door/door.ts), kept listening. Deno's `node:net` stops accepting
 * for good after one "Too many open files" without telling anyone, so when nothing was accepted
 * for a while the listener connects to itself, and if that connection is not accepted it
 * listens again on the same port, has the budget learn the descriptor ceiling it hit
 * (lib/door/budget.ts), and closes the newest connections that have not sent a request.
 */

import type http from "node:http";
import net from "node:net";
import { setImmediate } from "node:timers";
import type { DoorBudget } from "./budget.ts";
import type { DoorTrouble } from "./trouble.ts";
import type { Logger } from "../base/log.ts";
import type { Metrics } from "../base/metrics.ts";

/** How long the door waits for its own probe connection to be accepted. */
const PROBE_MS = 1500;

/** What a listener works with. */
export interface ListenerOptions {
  /** Makes a server with the door's handlers: one for the first listen, one per relisten. */
  server: () => http.Server;
  port: number;
  /** Interface to listen on: an address or name; "::" for every interface. */
  hostname: string;
  /** How often the accept loop is checked, in milliseconds. */
  watchMs: number;
  books: DoorBudget;
  trouble: DoorTrouble;
  metrics: Metrics;
  log: Logger;
}

/** Listens on `port` (0 the first time, for "any"); the same port again after a stall. */
function listen(
  s: http.Server,
  port: number,
  hostname: string,
  trouble: DoorTrouble,
): Promise<Deno.NetAddr> {
  return new Promise<Deno.NetAddr>((resolve, reject) => {
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
    s.listen({ port, host: hostname, exclusive: true }, () => {
      clearTimeout(timer);
      // Answered after we gave up on it: it must not stay bound beside the next attempt.
      if (late) return void s.close();
      s.off("error", failed);
      s.on("error", (error) => trouble.warn("listen", "listener error", { error: String(error) }));
      const address = s.address() as net.AddressInfo;
      resolve({ transport: "tcp", hostname: address.address, port: address.port });
    });
  });
}

export class Listener {
  readonly addr: Deno.NetAddr;
  readonly #options: ListenerOptions;
  /** Where the probe connects to. */
  readonly #probeHost: string;
  readonly #watch: ReturnType<typeof setInterval>;
  #current: http.Server;
  /** `books.accepted` when the watch last looked. */
  #seen: number;
  #relistening = false;
  #closed = false;

  /** Listens and starts the watch. Rejects as `Deno.serve` would throw. */
  static async open(options: ListenerOptions): Promise<Listener> {
    const first = options.server();
    const addr = await listen(first, options.port, options.hostname, options.trouble);
    return new Listener(options, first, addr);
  }

  private constructor(options: ListenerOptions, current: http.Server, addr: Deno.NetAddr) {
    this.#options = options;
    this.#current = current;
    this.addr = addr;
    // The accept-loop watch: quiet stretches are checked with a connection to ourselves.
    // Where it listens on every interface, its own loopback of that family (on "::" with
    // IPv6-only sockets, 127.0.0.1 would be refused whether or not the loop works).
    this.#probeHost = addr.hostname === "::"
      ? "::1"
      : addr.hostname === "0.0.0.0"
      ? "127.0.0.1"
      : addr.hostname;
    this.#seen = options.books.accepted;
    this.#watch = setInterval(() => this.#check(), options.watchMs);
    Deno.unrefTimer(this.#watch);
  }

  /** Stops listening and watching. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#watch);
    // Not waiting for the server's "close": it counts upgraded sockets that never report
    // closing (they belong to their WebSockets), so it would not come.
    this.#current.close();
  }

  /** Once per `watchMs`: probes a quiet accept loop, and lets a learned budget rise again. */
  #check(): void {
    if (this.#relistening) return;
    const { books } = this.#options;
    if (books.accepted !== this.#seen) this.#seen = books.accepted;
    else this.#probe();
    books.relax(Date.now());
  }

  async #relisten(why: string) {
    if (this.#relistening || this.#closed) return;
    this.#relistening = true;
    const { books, trouble, metrics, log, hostname } = this.#options;
    books.learnCeiling(Date.now());
    trouble.warn(why, "the listener stopped accepting connections: listening again", {
      reason: why,
      open: books.sockets,
      budget: books.budget,
    });
    metrics.acceptStalls++;
    // Make room at once, so that the new listener and its accepts have descriptors to work with.
    books.shed(metrics);
    const old = this.#current;
    old.close();
    for (let attempt = 0; !this.#closed; attempt++) {
      const next = this.#options.server();
      try {
        await listen(next, this.addr.port, hostname, trouble);
        if (this.#closed) {
          next.close();
          break;
        }
        log.info("listening again", { port: this.addr.port });
        this.#current = next;
        break;
      } catch (error) {
        trouble.warn("descriptors", "cannot listen again yet", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
    this.#seen = books.accepted;
    this.#relistening = false;
  }

  /**
   * Connects to ourselves: a connection not accepted in time means the accept loop stopped. A
   * loop that was busy (a burst of fan-out can hold it for seconds) is not one that stopped: a
   * wait that ended late proves nothing, and the verdict waits until the loop has handled the
   * I/O that came meanwhile (the probe's accept among it).
   */
  #probe(): void {
    const { books } = this.#options;
    const probeHost = this.#probeHost;
    const before = books.accepted;
    let settled = false;
    const done = (stalled: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.destroy();
      if (stalled !== undefined && books.accepted === before) this.#relisten(stalled);
    };
    /**
     * A wait of PROBE_MS armed at `armed` has ended. Not accepted yet: wait once more, since a
     * loop that is only busy gets to the accept in the end and one that stopped never does. A
     * wait that ended late proves nothing either way: the next quiet check probes again.
     */
    const waited = (armed: number, again: boolean) => {
      const late = Date.now() - armed - PROBE_MS > PROBE_MS / 3;
      setImmediate(() => {
        if (settled) return;
        if (books.accepted > before) return done(undefined);
        if (late) {
          settled = true;
          client.destroy();
          return;
        }
        if (!again) return done("stalled");
        const now = Date.now();
        setTimeout(() => waited(now, false), PROBE_MS);
      });
    };
    const client = net.connect({ port: this.addr.port, host: probeHost });
    const start = Date.now();
    const timer = setTimeout(() => waited(start, true), PROBE_MS);
    client.on("error", (error: NodeJS.ErrnoException) => {
      // Out of descriptors ourselves; or refused: nothing listens there any more.
      const code = error.code;
      done(
        code === "EMFILE" || code === "ENFILE"
          ? "descriptors"
          : code === "ECONNREFUSED" && probeHost === this.addr.hostname
          ? "stalled"
          : undefined,
      );
    });
    client.on("connect", () => {
      // Accepted (or not) shortly: give the loop a moment to see it.
      clearTimeout(timer);
      const connected = Date.now();
      setTimeout(() => waited(connected, true), PROBE_MS);
    });
  }
}
