/**
 * Presence in rooms of any size. A small room is told of each join and leave as it happens; a
 * big one gets a summary now and then, since telling every member of every join costs O(N²)
 * while a big room fills up. {@link RoomPresence} tells a hub's rooms; the rest is its rules.
 */

import type { ServerEvent } from "../protocol/protocol.ts";
import { countIn, type Delivery, isIn, type Member, type Room } from "./room.ts";
import type { Peers } from "../cluster/peers.ts";

/**
 * Above this many members, a room is big: joins and leaves are told as one `presence`
 * summary per {@link PRESENCE_INTERVAL_MS}, and a welcome lists only this many names (with the
 * count). Telling every member of every join costs O(N²) while a big room fills up.
 */
export const BIG_ROOM = 100;
/** How often a big room hears who came and went, at most. */
export const PRESENCE_INTERVAL_MS = 500;

/**
 * How long a room's presence summary waits: {@link PRESENCE_INTERVAL_MS}, stretched in rooms
 * above 1000 members in proportion to their size (2.5 s at 5000, 5 s at 10,000, at most 10 s).
 * A summary goes to every member, so this keeps their cost per second flat as a room grows. The
 * size is the room's when the summary goes: one that fills up while a summary waits (thousands of
 * joins a second) makes it wait for its new size, instead of going to thousands of members
 * halfway through. Measured, 5000 clients joining a room of 200: 13,600–13,700 socket writes
 * during the storm with the size at the round's start, 10,600–10,900 with the size when it goes
 * (of which 10,000 are the handshakes and welcomes).
 */
export function presenceInterval(members: number): number {
  return Math.min(10_000, PRESENCE_INTERVAL_MS * Math.max(1, members / 1000));
}
/** Names a presence summary spells out in each list; the counts say the rest. */
export const SUMMARY_NAMES = 50;

/** Joins (a member, named as it is when the summary goes, or another hub's name) and leaves of a round. */
export interface Round<M> {
  joined: (M | string)[];
  left: string[];
}

/**
 * A round's summary: counts of all who came and went, and the names of the first
 * {@link SUMMARY_NAMES} of each; `nameNow` gives a member's current name, or undefined if it has
 * left again.
 */
export function summary<M>(
  room: string,
  round: Round<M>,
  nameNow: (member: M) => string | undefined,
  count: number,
  ts: number,
): ServerEvent {
  const joined: string[] = [];
  for (const who of round.joined) {
    if (joined.length >= SUMMARY_NAMES) break;
    const name = typeof who === "string" ? who : nameNow(who);
    if (name !== undefined) joined.push(name);
  }
  return {
    type: "presence",
    room,
    joined,
    left: round.left.slice(0, SUMMARY_NAMES),
    joinedCount: round.joined.length,
    leftCount: round.left.length,
    count,
    ts,
  };
}

export interface PresenceOptions {
  /** Rooms with more members than this get summaries; {@link BIG_ROOM} by default. */
  bigRoom: number;
  /** The clock for summaries' `ts`. */
  now: () => number;
  /**
   * Runs a summary later; by default after {@link presenceInterval} for the room's size
   * (`members()`, read again when that time comes: a room that grew meanwhile waits longer).
   */
  defer?: ((flush: () => void, members: () => number) => void) | undefined;
  /** Whether a room is still the hub's (its last member may have left meanwhile). */
  current(room: Room): boolean;
}

/** Tells a hub's rooms who came and went: each change in a small room, summaries in a big one. */
export class RoomPresence {
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #defer: (flush: () => void, members: () => number) => void;

  /** `others`: who is in which room on other hubs; they count towards a room's size. */
  constructor(
    readonly send: Delivery,
    readonly others: Peers,
    readonly options: PresenceOptions,
  ) {
    this.#defer = options.defer ?? ((flush, members) => {
      const start = performance.now();
      const due = () => {
        const left = start + presenceInterval(members()) - performance.now();
        if (left < 1) return flush();
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          due();
        }, left);
        this.#timers.add(timer);
      };
      due();
    });
  }

  /** Someone came: `member` when it is one of the hub's own (it is not told of itself). */
  joined(room: Room, name: string, member: Member | undefined, ts: number): void {
    if (countIn(room, this.others) > this.options.bigRoom) return this.#note(room, member ?? name);
    this.send.toRoom(room, { type: "joined", room: room.name, name, ts }, member);
  }

  left(room: Room, name: string, ts: number): void {
    if (countIn(room, this.others) >= this.options.bigRoom) this.#note(room, undefined, name);
    else this.send.toRoom(room, { type: "left", room: room.name, name, ts });
  }

  /** Cancels summaries not sent yet (at shutdown). */
  stop(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  /**
   * Queues a join (the member, named as it is when the summary goes) or a leave (the name it
   * left under) in a big room; the first one of a round schedules the summary.
   */
  #note(room: Room, joined: Member | string | undefined, left?: string): void {
    if (!room.presence) {
      room.presence = { joined: [], left: [] };
      this.#defer(() => this.#flush(room), () => countIn(room, this.others));
    }
    if (joined !== undefined) room.presence.joined.push(joined);
    if (left !== undefined) room.presence.left.push(left);
  }

  #flush(room: Room): void {
    const round = room.presence;
    room.presence = undefined;
    if (!round || !this.options.current(room)) return;
    // Current names of those who came and are still here (one may have been renamed since).
    const now = (who: Member) => isIn(who, room) ? who.name : undefined;
    const count = countIn(room, this.others);
    this.send.toRoom(room, summary(room.name, round, now, count, this.options.now()));
  }
}
