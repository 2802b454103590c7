/**
 * The cluster layer under the hub: whatever happens in a room, on this hub or another, reaches
 * the hub through here as a room event, and whatever the hub does leaves through here.
 *
 * Below it the broker only moves envelopes. The feed turns them into ordered room events: a
 * room's messages in id order and once (lib/cluster/order.ts: gaps filled from the store, a new epoch
 * starts every room afresh), presence changes of every hub (lib/cluster/cluster.ts: peers, heartbeats,
 * expiry, snapshots), typing. It keeps events of rooms the hub has no member in from the hub, and
 * tells it when a member of another hub took a name one of its members holds and it must yield.
 * The hub above sees plain calls ({@link RoomEvents}) and reads other hubs' members from
 * {@link Feed.view}; tests drive it with a fake broker, store and clock.
 */

import type { Broker, CommunityEnvelope, Envelope } from "./broker.ts";
import { Cluster } from "./cluster.ts";
import { GAP_MS } from "../base/defaults.ts";
import { type HistoryStore, when } from "../store/history.ts";
import { type MessageEnvelope, RoomOrder } from "./order.ts";
import type { Peers } from "./peers.ts";

/** What the hub above hears, for the rooms it has opened. `actor`: one of its connections' ids. */
export interface RoomEvents {
  /** A stored message, in id order and once (as it comes, from a hub with a store of its own). */
  message(room: string, envelope: MessageEnvelope): void;
  /** A stored message that is not delivered live here (see {@link OrderHost.passed}). */
  passed(room: string, envelope: MessageEnvelope): void;
  joined(room: string, name: string, actor: string | undefined, ts: number): void;
  left(room: string, name: string, ts: number): void;
  renamed(room: string, from: string, to: string, actor: string | undefined, ts: number): void;
  typing(room: string, name: string, actor: string | undefined, ts: number): void;
  /** A member of another hub took `name` here, and this hub yields: its holder takes another. */
  clash(room: string, name: string): void;
  /**
   * A ruling, a removal or a private message (lib/chat/community.ts): rulings whatever the room,
   * the others for rooms the hub has opened. `own`: this hub published it.
   */
  community(envelope: CommunityEnvelope, own: boolean): void;
  /** The store moved to a new id space; rooms' orders have started afresh. */
  rebased(): void;
  /** This hub's rooms and their members' names, for another hub's snapshot. */
  snapshot(): Record<string, string[]>;
}

export interface FeedOptions {
  now: () => number;
  heartbeatMs?: number | undefined;
  peerTtlMs?: number | undefined;
  /** How long a message waits for an earlier one still in flight before the store fills the gap. */
  gapMs?: number | undefined;
  /** Timers for gap waits; real ones by default, a fake clock's in tests. */
  timers?: Timers | undefined;
}

/** Runs `run` after `ms` milliseconds, and cancels that. */
export interface Timers {
  later(run: () => void, ms: number): unknown;
  cancel(timer: unknown): void;
}

type Timer = ReturnType<typeof setTimeout>;
/** Messages from another epoch make the store re-read its epoch at most this often. */
const REREAD_MS = 1000;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class Feed {
  readonly #broker: Broker;
  readonly #store: HistoryStore;
  readonly #events: RoomEvents;
  readonly #now: () => number;
  readonly #gapMs: number;
  readonly #cluster: Cluster;
  /** The message order of each room the hub has opened. */
  readonly #orders = new Map<string, RoomOrder>();
  readonly #timers = new Set<Timer>();
  /** The timers gap waits run on (see {@link FeedOptions.timers}). */
  readonly #clock: Timers;
  /** The store's id space the rooms are ordered in. */
  #epoch: string;
  /**
   * Messages from another epoch that came while the store re-reads its own (see {@link #behind}),
   * in the order they came; undefined when no re-read is under way.
   */
  #behindBy: MessageEnvelope[] | undefined;
  /** An epoch a re-read found not to be the store's, and when (see {@link #behind}). */
  #notOurs: { epoch: string; at: number } | undefined;

  constructor(broker: Broker, store: HistoryStore, events: RoomEvents, options: FeedOptions) {
    this.#broker = broker;
    this.#store = store;
    this.#events = events;
    this.#now = options.now;
    this.#gapMs = options.gapMs ?? GAP_MS;
    this.#clock = options.timers ?? {
      later: (run, ms) => this.#later(run, ms),
      cancel: (timer) => this.#cancel(timer as Timer),
    };
    this.#epoch = store.epoch;
    this.#cluster = new Cluster(broker, {
      snapshot: () => events.snapshot(),
      joined: (change, origin, ts) => {
        if (!this.#orders.has(change.room)) return;
        events.joined(change.room, change.name, undefined, ts);
        this.#clash(change.room, change.name, origin);
      },
      left: (change, ts) => {
        if (this.#orders.has(change.room)) events.left(change.room, change.name, ts);
      },
    }, options);
    broker.subscribe((envelope) => this.#receive(envelope), (status) => {
      if (!status.up) return;
      // Back from an outage: others may have missed our changes and we theirs, the store may
      // have lost its data (a new epoch: ids start again),
      this.#cluster.hello();
      // and messages may have been lost in transit meanwhile.
      when(() => store.refresh?.(), () => {
        if (!this.rebaseIfNeeded()) { for (const order of this.#orders.values()) order.catchUp(); }
      }, () => {});
    });
    this.#cluster.start();
  }

  get origin(): string {
    return this.#broker.origin;
  }

  get broker(): Broker {
    return this.#broker;
  }

  /** Who is in which room on the other hubs: read it, never change it. */
  get view(): Peers {
    return this.#cluster.view;
  }

  /** The hub has a member in `room` now: its events reach the hub from here on. */
  open(room: string): void {
    if (this.#orders.has(room)) return;
    this.#orders.set(
      room,
      new RoomOrder(room, {
        store: this.#store,
        deliver: (envelope) => this.#events.message(room, envelope),
        passed: (envelope) => this.#events.passed(room, envelope),
        later: (run, ms) => this.#clock.later(run, ms),
        cancel: (timer) => this.#clock.cancel(timer),
        gapMs: this.#gapMs,
      }),
    );
    // A transport that scopes rooms carries the room's messages from now on: what was stored
    // while the subscription was on its way is fetched from the store once it is in place.
    this.#broker.follow?.(room).then(() => {
      const order = this.#orders.get(room);
      if (order?.known) order.catchUp();
    }, () => {});
  }

  /** The hub's last member left `room`. */
  close(room: string): void {
    this.#orders.get(room)?.stop();
    this.#orders.delete(room);
    this.#broker.unfollow?.(room);
  }

  /** A welcome read the store's last id in `room`: delivery starts after it. */
  startAt(room: string, head: number): void {
    this.#orders.get(room)?.startAt(head);
  }

  /** Whether the room's message with this id reached the hub already. */
  delivered(room: string, id: number): boolean {
    return this.#orders.get(room)?.delivered(id) ?? false;
  }

  /**
   * Moves to the store's id space if it started a new one (it lost its data): every room's
   * order starts afresh and the hub hears {@link RoomEvents.rebased}. True when it did.
   */
  rebaseIfNeeded(): boolean {
    if (this.#store.epoch === this.#epoch) return false;
    this.#epoch = this.#store.epoch;
    for (const order of this.#orders.values()) order.reset();
    this.#events.rebased();
    return true;
  }

  publish(envelope: Envelope): void {
    this.#broker.publish(envelope);
  }

  /** Tells every hub that a member of this one came into `room` as `name`. */
  joined(room: string, name: string, actor: string): void {
    this.publish({ kind: "joined", ...this.#change(room), name, actor });
  }

  left(room: string, name: string): void {
    this.publish({ kind: "left", ...this.#change(room), name });
  }

  /** `ts` is the time the renamed member was told, so every copy of the event carries the same. */
  renamed(room: string, from: string, to: string, actor: string, ts?: number): void {
    this.publish({ kind: "renamed", ...this.#change(room, ts), from, to, actor });
  }

  /** Tells every hub (this one included) what a moderator or member of a community did. */
  community(envelope: DistributiveOmit<CommunityEnvelope, "origin">): void {
    this.publish({ ...envelope, origin: this.origin } as CommunityEnvelope);
  }

  typing(room: string, name: string, actor: string, ts: number): void {
    this.publish({ kind: "typing", origin: this.origin, room, name, ts, actor });
  }

  /** Cancels the feed's timers (gap waits), e.g. while the server drains. */
  clearTimers(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const order of this.#orders.values()) order.timersCleared();
  }

  /** Stops its timers and tells the other hubs this one is leaving. */
  stop(): void {
    this.clearTimers();
    this.#cluster.stop();
  }

  /** The fields of a presence change from this hub: numbered, so others can see a gap. */
  #change(
    room: string,
    ts = this.#now(),
  ): { origin: string; room: string; seq: number; ts: number } {
    return { origin: this.origin, room, seq: this.#cluster.nextSeq(), ts };
  }

  #receive(envelope: Envelope): void {
    const own = envelope.origin === this.origin;
    const events = this.#events;
    switch (envelope.kind) {
      case "message":
        return this.#message(envelope);
      case "joined": {
        const { origin, seq, room, name } = envelope;
        if (!own) this.#cluster.change(origin, seq, room, name);
        if (!this.#orders.has(room)) return;
        events.joined(room, name, own ? envelope.actor : undefined, envelope.ts);
        return this.#clash(room, name, origin);
      }
      case "left": {
        const { origin, seq, room, name } = envelope;
        if (!own) this.#cluster.change(origin, seq, room, undefined, name);
        if (this.#orders.has(room)) events.left(room, name, envelope.ts);
        return;
      }
      case "renamed": {
        const { origin, seq, room, from, to } = envelope;
        if (!own) this.#cluster.change(origin, seq, room, to, from);
        if (!this.#orders.has(room)) return;
        events.renamed(room, from, to, own ? envelope.actor : undefined, envelope.ts);
        return this.#clash(room, to, origin);
      }
      case "ruling":
        return events.community(envelope, own);
      case "delete":
        // Every hub forgets what it encoded of the room's history; the room's members are told.
        return events.community(envelope, own);
      case "kick":
      case "private":
        if (envelope.room === "*" || this.#orders.has(envelope.room)) {
          events.community(envelope, own);
        }
        return;
      case "typing": {
        const { room, name, ts } = envelope;
        if (this.#orders.has(room)) events.typing(room, name, own ? envelope.actor : undefined, ts);
        return;
      }
    }
    return this.#cluster.control(envelope);
  }

  /** Of two members who took one name on two hubs at once, the one on the greater origin yields. */
  #clash(room: string, name: string, origin: string): void {
    if (origin !== this.origin && this.origin > origin && this.#orders.has(room)) {
      this.#events.clash(room, name);
    }
  }

  /** A stored message: in order, once, in the store's current epoch. */
  #message(envelope: MessageEnvelope, reread = false): void {
    this.rebaseIfNeeded();
    const store = this.#store;
    if (envelope.epoch !== store.epoch && store.refresh && !reread) return this.#behind(envelope);
    if (envelope.epoch === store.epoch) store.seen?.(envelope.message.room, envelope.message.id);
    const order = this.#orders.get(envelope.message.room);
    if (!order) return;
    // From a hub with its own store (workers without a shared one): its ids are not ours to
    // order or deduplicate by, so it is passed on as it comes.
    if (envelope.epoch !== store.epoch) return this.#events.message(order.room, envelope);
    order.accept(envelope);
  }

  /**
   * A message from another epoch, over a shared store (one that can start a new epoch: Redis).
   * Another instance may have noticed first that the store lost its data (emptied while it ran:
   * nothing dropped the connection), so the store re-reads its epoch; once it has, the rooms
   * move to it (new welcomes), and the messages that came meanwhile are taken in their order.
   * One from an epoch that is still not the store's (stored under the old one before the change)
   * is passed on as it comes, as before. Without this, the new space's ids 1, 2, 3 went to members
   * here after the old space's 10, under the old epoch, with no new welcome. If the store cannot
   * be read, the messages held are dropped, not passed on out of order: when its connection comes
   * back, the store is read again and the rooms move and catch up (see the constructor).
   */
  #behind(envelope: MessageEnvelope): void {
    if (this.#behindBy !== undefined) return void this.#behindBy.push(envelope);
    // A stream of them from an instance not yet moved: one re-read a second for that epoch.
    const known = this.#notOurs;
    if (known?.epoch === envelope.epoch && performance.now() - known.at < REREAD_MS) {
      return this.#message(envelope, true);
    }
    this.#behindBy = [envelope];
    const resume = (read: boolean) => {
      const waiting = this.#behindBy ?? [];
      this.#behindBy = undefined;
      this.rebaseIfNeeded();
      if (read && envelope.epoch !== this.#store.epoch) {
        this.#notOurs = { epoch: envelope.epoch, at: performance.now() };
      }
      const epoch = this.#store.epoch;
      for (const held of waiting) if (read || held.epoch === epoch) this.#message(held, true);
    };
    when(() => this.#store.refresh!(), () => resume(true), () => resume(false));
  }

  #later(run: () => void, ms: number): Timer {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      run();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #cancel(timer: Timer): void {
    clearTimeout(timer);
    this.#timers.delete(timer);
  }
}
