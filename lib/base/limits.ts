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

  /** Takes `amount` tokens (one by default) if there are so many. */
  take(amount = 1): boolean {
    this.#refill();
    if (this.#tokens < amount) return false;
    this.#tokens -= amount;
    return true;
  }

  /** Seconds until `amount` tokens are there (0: now). */
  wait(amount = 1): number {
    this.#refill();
    return this.#tokens >= amount ? 0 : (amount - this.#tokens) / this.perSecond;
  }

  /**
   * Gives back tokens taken for a reservation and not used (or takes more, when negative). A
   * budget of bytes reserves the most a reply may take before it is built, and settles after.
   */
  refund(amount: number): void {
    this.#tokens = Math.min(this.burst, this.#tokens + amount);
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
