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
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /**
   * Whether anything is left to spend; when not, how long until there is, in seconds. A budget
   * of bytes is checked with this before a reply is built, and charged with {@link spend} after.
   */
  wait(): number {
    this.#refill();
    return this.#tokens > 0 ? 0 : (1 - this.#tokens) / this.perSecond;
  }

  /** Takes `amount` tokens, going into debt if there are not so many: the next wait is longer. */
  spend(amount: number): void {
    this.#refill();
    this.#tokens -= amount;
  }

  #refill(): void {
    const now = this.now();
    this.#tokens = Math.min(
      this.burst,
      this.#tokens + ((now - this.#last) / 1000) * this.perSecond,
    );
    this.#last = now;
  }
}
