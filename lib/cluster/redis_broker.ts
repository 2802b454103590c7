/**
 * The Redis broker: events travel between instances on the channel `natter:events` as JSON
 * envelopes, over the link's subscription connection (lib/store/redis_link.ts).
 */

import type { Broker, BrokerStatus, Envelope } from "./broker.ts";
import type { RedisLink } from "../store/redis_link.ts";

/** The channel every instance publishes its envelopes on. */
export const EVENTS_CHANNEL = "natter:events";

/** Pub/sub between instances; each drops its own echoes. */
export class RedisBroker implements Broker {
  readonly kind = "redis";
  readonly origin = crypto.randomUUID();
  readonly shared = true;
  #handler: ((envelope: Envelope) => void) | undefined;
  #ready: Promise<unknown> | undefined;

  constructor(readonly link: RedisLink) {}

  get status(): BrokerStatus {
    return this.link.status;
  }

  subscribe(
    handler: (envelope: Envelope) => void,
    onStatus?: (status: BrokerStatus) => void,
  ): void {
    this.#handler = handler;
    if (onStatus) this.link.onStatus = onStatus;
    this.#ready = this.link.subscriber.subscribe(EVENTS_CHANNEL, (data: string) => {
      let envelope: Envelope;
      try {
        envelope = JSON.parse(data);
      } catch {
        return;
      }
      if (envelope?.origin !== this.origin) this.#handler?.(envelope);
    });
  }

  /** Resolves once the subscription is in place (events published before it are not heard). */
  ready(): Promise<unknown> {
    return this.#ready ?? Promise.resolve();
  }

  publish(envelope: Envelope): void {
    this.#handler?.(envelope);
    if (!this.link.command.isReady) return;
    this.link.command.publish(EVENTS_CHANNEL, JSON.stringify(envelope)).catch(() => {
      // Lost with the connection: the others resynchronise from heartbeats and the store.
    });
  }

  async close(): Promise<void> {
    this.#handler = undefined;
    await this.link.close();
  }
}
