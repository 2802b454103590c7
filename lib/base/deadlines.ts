/**
 * Many deadlines of one length without a timer each: the door's wait for a request head, and an
 * upgrade's wait for its WebSocket to open, are armed for every connection and almost always
 * disarmed long before they expire. A runtime timer per connection cost a measurable part of a
 * connect (arming and clearing two of them; bench/RESULTS.md, tenth session); here arming is a
 * map insertion, and one interval, running only while something is armed, expires what is due.
 *
 * Every deadline has the same length, so the map's insertion order is the order they fall due:
 * a sweep stops at the first one that is not due. A deadline fires between `ms` and
 * `ms + tickMs` after it was armed.
 */
export class Deadlines<T> {
  readonly #due = new Map<T, number>();
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly tickMs: number;

  /** `expire` is called once for each item whose deadline passed (it is disarmed first). */
  constructor(readonly ms: number, readonly expire: (item: T) => void, tickMs?: number) {
    this.tickMs = tickMs ?? Math.min(1000, Math.max(20, Math.floor(ms / 4)));
  }

  /** Items armed now. */
  get size(): number {
    return this.#due.size;
  }

  /** Arms (or re-arms, from now) an item's deadline. */
  arm(item: T): void {
    this.#due.delete(item);
    this.#due.set(item, performance.now() + this.ms);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#sweep(), this.tickMs);
      Deno.unrefTimer(this.#timer);
    }
  }

  /** Disarms an item's deadline, if it is armed. */
  disarm(item: T): void {
    if (this.#due.delete(item) && this.#due.size === 0) this.#idle();
  }

  /** Disarms everything; returns what was armed. */
  clear(): T[] {
    const armed = [...this.#due.keys()];
    this.#due.clear();
    this.#idle();
    return armed;
  }

  #idle(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    const now = performance.now();
    for (const [item, due] of this.#due) {
      if (due > now) break;
      this.#due.delete(item);
      try {
        this.expire(item);
      } catch {
        // one failing expiry must not keep the others
      }
    }
    if (this.#due.size === 0) this.#idle();
  }
}
