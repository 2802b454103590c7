/**
 * Fan-out between hubs. A hub publishes every event through its broker; the broker hands it
 * to this hub's own handler at once and carries it to every other hub (other workers, other
 * machines). Each envelope names its origin, so a broker drops its own echoes and no hub
 * hears an event twice. Three brokers, one interface: in-process, `BroadcastChannel`
 * (the workers of `deno serve --parallel`, or isolates on Deno Deploy), Redis (lib/cluster/redis_broker.ts).
 */

import type { Message, Ruling } from "../store/history.ts";
import type { Ref } from "../protocol/protocol.ts";

/** Presence changes carry a per-origin sequence number, so a gap shows a lost event. */
interface Presence {
  origin: string;
  room: string;
  seq: number;
  ts: number;
}

/** Something one hub tells all hubs. */
export type Envelope =
  /**
   * A stored message; `actor` (a connection id at `origin`) gets it back with its `ref`.
   * `epoch` names the store that gave it its id (see HistoryStore.epoch).
   */
  | {
    kind: "message";
    origin: string;
    epoch: string;
    message: Message;
    actor?: string;
    ref?: Ref;
  }
  | Presence & { kind: "joined"; name: string; actor?: string }
  | Presence & { kind: "left"; name: string }
  | Presence & { kind: "renamed"; from: string; to: string; actor?: string }
  | { kind: "typing"; origin: string; room: string; name: string; ts: number; actor?: string }
  | CommunityEnvelope
  /** "I am alive, and my presence is at `seq`." */
  | { kind: "heartbeat"; origin: string; seq: number }
  /** "Tell me who you have" (to one hub, or to all when `to` is absent). */
  | { kind: "hello"; origin: string; to?: string }
  /** Every member a hub has, by room: the answer to `hello`. */
  | { kind: "snapshot"; origin: string; seq: number; rooms: Record<string, string[]> }
  /** The hub is stopping: forget its members now rather than at expiry. */
  | { kind: "bye"; origin: string };

/**
 * What moderators and members of a community do across hubs (lib/chat/community.ts): a ruling
 * made or lifted (every hub keeps them all), a member removed, a private message. `actor` (a
 * connection id at `origin`) gets the answer with its `ref`.
 */
export type CommunityEnvelope =
  | { kind: "ruling"; origin: string; ruling: Ruling; lifted?: true; actor?: string; ref?: Ref }
  | {
    kind: "kick";
    origin: string;
    /** The room; `*` for every room (the server API's disconnect, by name or by `sub`). */
    room: string;
    name?: string;
    sub?: string;
    by: string;
    reason?: string;
    ts: number;
    actor?: string;
    ref?: Ref;
  }
  | {
    kind: "delete";
    origin: string;
    room: string;
    id: number;
    by: string;
    ts: number;
    actor?: string;
    ref?: Ref;
  }
  | {
    kind: "private";
    origin: string;
    room: string;
    from: string;
    to: string;
    text: string;
    ts: number;
    actor?: string;
    ref?: Ref;
  };

/**
 * The room whose channel carries an envelope, where the transport scopes by room: a room's
 * messages, typing, removals, deletions and private messages. Presence (joined, left, renamed)
 * and the cluster's control travel to every hub: each keeps a view of the others' members, with
 * one sequence per hub to notice a lost change, and rulings hold in every room.
 */
export function scopedRoom(envelope: Envelope): string | undefined {
  switch (envelope.kind) {
    case "message":
      return envelope.message.room;
    case "typing":
    case "private":
    case "delete":
      return envelope.room;
    case "kick":
      return envelope.room === "*" ? undefined : envelope.room;
    default:
      return undefined;
  }
}

/** Whether a broker reaches the other hubs, and since when. */
export interface BrokerStatus {
  /** True when events reach other hubs (always true for the in-process broker). */
  up: boolean;
  /** Why not, when it is down. */
  reason?: string;
}

/** What a hub needs of a broker. */
export interface Broker {
  /** "local", "channel" or "redis": for logs, /healthz and /metrics. */
  readonly kind: string;
  /** This hub's origin tag: unique per process (or worker). */
  readonly origin: string;
  /** False for the in-process broker: there are no other hubs to keep track of. */
  readonly shared: boolean;
  readonly status: BrokerStatus;
  /**
   * Sets the receiver of every envelope, this hub's own included (delivered synchronously,
   * inside `publish`), and of status changes.
   */
  subscribe(handler: (envelope: Envelope) => void, onStatus?: (status: BrokerStatus) => void): void;
  /** Delivers to this hub now and to every other hub as soon as the transport can. */
  publish(envelope: Envelope): void;
  /**
   * A transport that scopes a room's traffic (lib/cluster/redis_broker.ts) hears a room's
   * messages, typing and the like only while the hub follows the room: from its first local
   * member to its last. Resolves once they are heard. Transports that carry everything to
   * everyone have neither.
   */
  follow?(room: string): Promise<unknown>;
  unfollow?(room: string): void;
  /** Stops delivering; resolves once the transport is released. */
  close(): Promise<void>;
}

/** The single-process broker: publishing is calling the handler. */
export class LocalBroker implements Broker {
  readonly kind = "local";
  readonly origin = crypto.randomUUID();
  readonly shared = false;
  readonly status: BrokerStatus = { up: true };
  #handler: ((envelope: Envelope) => void) | undefined;

  subscribe(handler: (envelope: Envelope) => void): void {
    this.#handler = handler;
  }

  publish(envelope: Envelope): void {
    this.#handler?.(envelope);
  }

  close(): Promise<void> {
    this.#handler = undefined;
    return Promise.resolve();
  }
}

/** Default channel name; every natter worker in a process (or a Deploy project) shares it. */
export const CHANNEL_NAME = "natter";

/**
 * The `BroadcastChannel` broker: the workers of `deno serve --parallel` (one process), or the
 * isolates of a Deno Deploy project. A channel does not deliver to its own sender, so this
 * hub's envelopes go to its handler directly.
 */
export class ChannelBroker implements Broker {
  readonly kind = "channel";
  readonly origin = crypto.randomUUID();
  readonly shared = true;
  readonly status: BrokerStatus = { up: true };
  readonly #channel: BroadcastChannel;
  #handler: ((envelope: Envelope) => void) | undefined;

  constructor(name = CHANNEL_NAME) {
    this.#channel = new BroadcastChannel(name);
    this.#channel.onmessage = (event: MessageEvent<Envelope>) => {
      const envelope = event.data;
      if (envelope?.origin !== this.origin) this.#handler?.(envelope);
    };
  }

  subscribe(handler: (envelope: Envelope) => void): void {
    this.#handler = handler;
  }

  publish(envelope: Envelope): void {
    this.#handler?.(envelope);
    try {
      this.#channel.postMessage(envelope);
    } catch {
      // Closed at shutdown: the others will expire this hub's members.
    }
  }

  close(): Promise<void> {
    this.#handler = undefined;
    this.#channel.close();
    return Promise.resolve();
  }
}
