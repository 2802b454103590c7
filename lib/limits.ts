/** Rate limiting: a token bucket per connection. */

/**
 * Allows `burst` events at once and `perSecond` on average. Tokens refill continuously
 * from the injected clock (milliseconds), so there is no timer per connection.
 */
/** The default clock: one function for every bucket (a bound copy each would cost memory). */
function monotonicNow(): number {
  return performance.now();
}

export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly burst: number,
    readonly perSecond: number,
    readonly now: () => number = monotonicNow,
  ) {
    this.#tokens = burst;
    this.#last = now();
  }

  /** Takes one token if there is one. */
  take(): boolean {
    const now = this.now();
    this.#tokens = Math.min(
      this.burst,
      this.#tokens + ((now - this.#last) / 1000) * this.perSecond,
    );
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
