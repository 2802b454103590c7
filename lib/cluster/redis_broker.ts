/**
 * The Redis broker: events travel between instances as JSON envelopes, over the link's
 * subscription connection (lib/store/redis_link.ts). A room's traffic (its messages, typing,
 * removals, deletions, private messages: see `scopedRoom`) goes on the room's own channel,
 * `natter:{ROOM}:room`, which an instance subscribes to only while it has a member there;
 * presence and the cluster's control go on `natter:events`, which every instance hears. On a
 * Redis Cluster these are sharded channels (SPUBLISH/SSUBSCRIBE), each on its slot's shard. An instance with
 * no member in a busy room receives none of its messages.
 */

import { type Broker, type BrokerStatus, type Envelope, scopedRoom } from "./broker.ts";
import type { RedisLink } from "../store/redis_link.ts";

/** The channel of presence and control, which every instance hears. */
export const EVENTS_CHANNEL = "natter:events";

/**
 * A room's channel: its messages and the like, heard by the instances with members there. It
 * carries the room's hash tag, so that on a Redis Cluster it lives on the shard of the room's
 * keys (lib/store/redis_store.ts): a shard that fails takes its rooms' history and traffic
 * together, and no other room's.
 */
export function roomChannel(room: string): string {
  return `natter:{${room}}:room`;
}

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
    this.#ready = this.link.subscribe(EVENTS_CHANNEL, this.#listener);
  }

  /** Every channel's messages: envelopes from other instances, to the handler. */
  readonly #listener = (data: string): void => {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(data);
    } catch {
      return;
    }
    if (envelope?.origin !== this.origin) this.#handler?.(envelope);
  };

  follow(room: string): Promise<unknown> {
    return this.link.subscribe(roomChannel(room), this.#listener);
  }

  unfollow(room: string): void {
    this.link.unsubscribe(roomChannel(room), this.#listener).catch(() => {
      // The connection is gone, and the subscription with it.
    });
  }

  /** Resolves once the subscription is in place (events published before it are not heard). */
  ready(): Promise<unknown> {
    return this.#ready ?? Promise.resolve();
  }

  publish(envelope: Envelope): void {
    this.#handler?.(envelope);
    if (!this.link.connected) return;
    const room = scopedRoom(envelope);
    const channel = room === undefined ? EVENTS_CHANNEL : roomChannel(room);
    this.link.publish(channel, JSON.stringify(envelope)).catch(() => {
      // Lost with the connection: the others resynchronise from heartbeats and the store.
    });
  }

  async close(): Promise<void> {
    this.#handler = undefined;
    await this.link.close();
  }
}
