/**
 * The hubs' protocol with one another, below the hub: who is alive, and who is in which room on
 * the other hubs (workers or instances sharing one chat through a broker).
 *
 * Each hub numbers its presence changes (`joined`, `left`, `renamed` carry the number) and says
 * it is alive every {@link HEARTBEAT_MS} with its latest number; a gap in the numbers, or a
 * heartbeat with another one, means changes were lost, and the hub asks that peer for a snapshot
 * (`hello` to it; it answers with a `snapshot` of its rooms). A new hub says `hello` to all. A
 * hub that stops (`bye`), or is not heard from for {@link PEER_TTL_MS}, takes its members with
 * it. The hub above sees the outcome as members of other hubs coming and going, and reads
 * {@link Cluster.view} for names and counts; with an unshared broker none of this runs.
 */

import type { Broker, Envelope } from "./broker.ts";
import { type Change, Peers } from "./peers.ts";

/** How often a hub with a shared broker says it is alive, and how long until one is gone. */
export const HEARTBEAT_MS = 2000;
export const PEER_TTL_MS = 7000;

/** What the cluster needs of the hub above it. */
export interface ClusterHost {
  /** This hub's rooms and their members' names, for a snapshot. */
  snapshot(): Record<string, string[]>;
  /** A member of another hub came into a room this hub may have members in. */
  joined(change: Change, origin: string, ts: number): void;
  /** A member of another hub left a room. */
  left(change: Change, ts: number): void;
}

export interface ClusterOptions {
  now: () => number;
  heartbeatMs?: number | undefined;
  peerTtlMs?: number | undefined;
}

type Control = Extract<Envelope, { kind: "heartbeat" | "hello" | "snapshot" | "bye" }>;

export class Cluster {
  /** The presence view of every other hub: read it, never change it from above. */
  readonly view = new Peers();
  readonly #now: () => number;
  readonly #heartbeatMs: number;
  readonly #peerTtlMs: number;
  /** Sequence number of this hub's presence changes. */
  #seq = 0;
  #heartbeat: ReturnType<typeof setInterval> | undefined;

  constructor(readonly broker: Broker, readonly host: ClusterHost, options: ClusterOptions) {
    this.#now = options.now;
    this.#heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this.#peerTtlMs = options.peerTtlMs ?? PEER_TTL_MS;
  }

  get origin(): string {
    return this.broker.origin;
  }

  /** The number of this hub's next presence change. */
  nextSeq(): number {
    return ++this.#seq;
  }

  /** Says hello to the others, and beats from now on (with a shared broker). */
  start(): void {
    if (!this.broker.shared) return;
    this.hello();
    this.#heartbeat = setInterval(() => this.beat(), this.#heartbeatMs);
  }

  /** Asks every other hub for a snapshot (at start, and back from an outage). */
  hello(): void {
    this.broker.publish({ kind: "hello", origin: this.origin });
  }

  /** Stops beating and tells the others this hub is leaving, so its members go at once. */
  stop(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    if (this.broker.shared) this.broker.publish({ kind: "bye", origin: this.origin });
  }

  /** Every heartbeat: say this hub is alive, and let go of hubs that went silent. */
  beat(): void {
    this.broker.publish({ kind: "heartbeat", origin: this.origin, seq: this.#seq });
    const now = this.#now();
    for (const origin of this.view.silentSince(now - this.#peerTtlMs)) {
      for (const change of this.view.drop(origin, true)) this.host.left(change, now);
    }
  }

  /** Handles another hub's control envelope (heartbeat, hello, snapshot, bye). */
  control(envelope: Control): void {
    if (envelope.origin === this.origin) return;
    const now = this.#now();
    switch (envelope.kind) {
      case "heartbeat":
        if (!this.view.heard(envelope.origin, envelope.seq, now)) this.#askFor(envelope.origin);
        return;
      case "hello":
        if (envelope.to === undefined || envelope.to === this.origin) {
          const rooms = this.host.snapshot();
          this.broker.publish({ kind: "snapshot", origin: this.origin, seq: this.#seq, rooms });
        }
        return;
      case "snapshot": {
        const { joined, left } = this.view.replace(
          envelope.origin,
          envelope.seq,
          envelope.rooms,
          now,
        );
        for (const change of joined) this.host.joined(change, envelope.origin, now);
        for (const change of left) this.host.left(change, now);
        return;
      }
      case "bye":
        for (const change of this.view.drop(envelope.origin)) this.host.left(change, now);
        return;
    }
  }

  /** Applies another hub's presence change to the view of it; a gap asks for a snapshot. */
  change(origin: string, seq: number, room: string, add?: string, remove?: string): void {
    const inStep = this.view.heard(origin, seq, this.#now(), true);
    if (remove !== undefined) this.view.remove(origin, room, remove);
    if (add !== undefined) this.view.add(origin, room, add);
    if (!inStep) this.#askFor(origin);
  }

  #askFor(origin: string): void {
    this.broker.publish({ kind: "hello", origin: this.origin, to: origin });
  }
}
