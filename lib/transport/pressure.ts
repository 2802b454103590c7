/**
 * The memory budget for the whole process (`--max-memory`). Four times a second, and whenever a
 * connection asks in and the last reading is older than {@link FRESH_MS}, it reads the resident
 * set size (about 16 µs a reading); above the budget natter is "over": it refuses new connections (503),
 * drops the connections that hold the most unsent data, and says so in `/healthz` and
 * `/metrics`, until it is back under 90 % of the budget.
 *
 * What it cannot do is take back what the runtime holds for a peer: Deno buffers an incoming
 * message in full (a fragmented one without any cap) before natter sees any of it, keeps reading
 * after natter closes the connection, and frees it only when the peer leaves or stops answering
 * pings (tests/runtime_test.ts). Refusing new connections is what bounds the number of such
 * peers; docs/DEPLOY.md says what that does and does not bound.
 *
 * Nor does the resident size always come back down when what filled it is gone: the allocator
 * may keep memory it freed (fragmentation, small allocations). Over budget with no connection
 * open, nothing is anybody's: natter takes connections again, and refuses once more only when
 * the resident size grows by a tenth of the budget beyond what was kept (it reuses what it kept
 * before it grows). Refusing everyone for what nobody holds would be a lockout of its own.
 */

import type { Logger } from "../base/log.ts";

/** A connection as the guard sees it. */
export interface Shedable {
  /** Open and not yet closing: a closing one is not dropped (or counted) again. */
  readonly open: boolean;
  /** Bytes it holds unsent (natter's queue and the socket's buffer). */
  readonly unsent: number;
  shed(): void;
}

export interface PressureOptions {
  /** The budget, in bytes of resident memory. */
  budget: number;
  /** Connections that can be dropped, largest holders first. */
  connections: () => Iterable<Shedable>;
  /** Whether no connection is open (none that could hold memory); by `connections` by default. */
  idle?: () => boolean;
  /** Unsent bytes below which a connection is not worth dropping. */
  floor: number;
  log: Logger;
  /** Resident set size in bytes; `Deno.memoryUsage().rss` by default. */
  rss?: () => number;
  intervalMs?: number;
}

/**
 * How often the guard reads on its own. A burst of connections can add hundreds of MiB in a
 * second; read once a second, the budget was passed by up to 950 MiB before the first refusal.
 */
const INTERVAL_MS = 250;
/** A reading at most this old decides whether a new connection is taken. */
export const FRESH_MS = 50;
/** Fraction of the budget natter must fall under before it takes new connections again. */
const RESUME = 0.9;
/** How often the same warning may be logged. */
const LOG_EVERY_MS = 30_000;

export class MemoryGuard {
  readonly budget: number;
  /**
   * The resident size above which natter is over: the budget, or more while the allocator keeps
   * memory that nobody holds (see above); back to the budget once the size is under it.
   */
  ceiling: number;
  /** Over budget: new connections are refused. */
  over = false;
  /** The last reading, in bytes. */
  rss = 0;
  /** When it was read (performance.now()). */
  #readAt = -Infinity;
  readonly #options: PressureOptions;
  readonly #read: () => number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #logged = -Infinity;

  constructor(options: PressureOptions) {
    this.#options = options;
    this.budget = this.ceiling = options.budget;
    this.#read = options.rss ?? (() => Deno.memoryUsage().rss);
    this.rss = this.#read();
  }

  start(): void {
    this.#timer ??= setInterval(() => this.check(), this.#options.intervalMs ?? INTERVAL_MS);
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Whether a new connection is refused, on a reading at most {@link FRESH_MS} old: between two
   * of the timer's readings, a burst of connections is not taken on an old one.
   */
  refusing(): boolean {
    if (performance.now() - this.#readAt >= FRESH_MS) this.check();
    return this.over;
  }

  /** One reading, and what follows from it. */
  check(): void {
    const rss = this.rss = this.#read();
    this.#readAt = performance.now();
    if (this.over && rss < this.ceiling * RESUME) {
      this.over = false;
      if (rss <= this.budget) this.ceiling = this.budget;
      this.#options.log.warn("memory back under its mark: taking new connections again", {
        rssMiB: mib(rss),
        budgetMiB: mib(this.budget),
      });
      return;
    }
    if (!this.over && rss <= this.budget) this.ceiling = this.budget; // what was kept is given back
    if (!this.over && rss <= this.ceiling) return;
    if (this.over && this.#idle()) {
      // Nobody holds it: the allocator kept it. Growing past it is still refused.
      this.over = false;
      this.ceiling = rss + this.budget * (1 - RESUME);
      this.#options.log.warn(
        "over the memory budget with no connection open: the allocator keeps memory it freed; " +
          "taking new connections again",
        { rssMiB: mib(rss), budgetMiB: mib(this.budget), ceilingMiB: mib(this.ceiling) },
      );
      return;
    }
    if (rss <= this.ceiling) return; // between the two marks: stay as we are
    this.over = true;
    const dropped = this.#shed(rss - this.ceiling);
    const now = Date.now();
    if (now - this.#logged >= LOG_EVERY_MS) {
      this.#logged = now;
      this.#options.log.warn("over the memory budget: refusing new connections", {
        rssMiB: mib(rss),
        budgetMiB: mib(this.budget),
        dropped,
      });
    }
  }

  #idle(): boolean {
    if (this.#options.idle) return this.#options.idle();
    for (const conn of this.#options.connections()) if (conn.open) return false;
    return true;
  }

  /** Drops the largest holders of unsent data until `excess` bytes are covered. */
  #shed(excess: number): number {
    const floor = this.#options.floor;
    const heavy = [...this.#options.connections()].filter((c) => c.open && c.unsent > floor);
    heavy.sort((a, b) => b.unsent - a.unsent);
    let freed = 0;
    let dropped = 0;
    for (const conn of heavy) {
      if (freed >= excess) break;
      freed += conn.unsent;
      conn.shed();
      dropped++;
    }
    return dropped;
  }
}

function mib(bytes: number): number {
  return Math.round(bytes / 1048576);
}
