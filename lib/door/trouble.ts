/**
 * What the door (lib/door/door.ts) says about itself: its warnings, logged at most once per
 * {@link LOG_EVERY_MS} per kind, and the trouble that keeps `/healthz` degraded for
 * {@link TROUBLE_MS} after it was last seen.
 */

import type { Fields, Logger } from "../base/log.ts";

/** How long a problem keeps `/healthz` degraded after it was last seen. */
const TROUBLE_MS = 10_000;
/** How often the same warning may be logged. */
const LOG_EVERY_MS = 10_000;

export class DoorTrouble {
  readonly #log: Logger;
  readonly #lastLogged = new Map<string, number>();
  #trouble: string | undefined;
  #troubleAt = -Infinity;

  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * Logs at most once per LOG_EVERY_MS per kind. Trouble of the server's own (descriptors, a
   * stalled listener) also makes /healthz degraded for a while; what one client can cause (a
   * full waiting room) does not, or one client could take an instance out of its load balancer.
   */
  warn(kind: string, message: string, fields: Fields, serious = true): void {
    const now = Date.now();
    if (serious) {
      this.#trouble = kind;
      this.#troubleAt = now;
    }
    if (now - (this.#lastLogged.get(kind) ?? -Infinity) < LOG_EVERY_MS) return;
    this.#lastLogged.set(kind, now);
    this.#log.warn(message, fields);
  }

  /** Why the door is degraded, if it was in the last TROUBLE_MS. */
  get current(): string | undefined {
    return Date.now() - this.#troubleAt < TROUBLE_MS ? this.#trouble : undefined;
  }
}
