/**
 * Who is in which room on the other hubs (workers or instances), as far as their presence
 * events tell. Each hub numbers its presence changes; a gap, or a heartbeat with another
 * number, means events were lost and the hub asks that peer for a snapshot. A peer that
 * stops sending heartbeats (a crashed instance) is forgotten after the time-to-live.
 */

import { nameKey } from "../protocol/text.ts";

/** A change in a room: a name came or went. */
export interface Change {
  room: string;
  name: string;
}

interface Peer {
  /** Its last presence sequence number seen here. */
  seq: number;
  heardAt: number;
  /** Whether a snapshot of it arrived: before that, its members are not news. */
  synced: boolean;
  /** Room → name key → name. */
  rooms: Map<string, Map<string, string>>;
}

/** The presence view of every other hub. */
export class Peers {
  readonly #peers = new Map<string, Peer>();
  /**
   * Peers dropped for silence (an outage longer than the time-to-live, or a stall): if one
   * speaks again, its members are news again, since they were announced as gone.
   */
  readonly #dropped = new Set<string>();

  /** Number of other hubs heard from. */
  get size(): number {
    return this.#peers.size;
  }

  /** Names of the other hubs' members in a room. */
  names(room: string, limit = Infinity): string[] {
    const list: string[] = [];
    for (const peer of this.#peers.values()) {
      for (const name of peer.rooms.get(room)?.values() ?? []) {
        if (list.length >= limit) return list;
        list.push(name);
      }
    }
    return list;
  }

  count(room: string): number {
    let n = 0;
    for (const peer of this.#peers.values()) n += peer.rooms.get(room)?.size ?? 0;
    return n;
  }

  /** Whether another hub has a member of that name (by {@link nameKey}) in the room. */
  has(room: string, key: string): boolean {
    for (const peer of this.#peers.values()) if (peer.rooms.get(room)?.has(key)) return true;
    return false;
  }

  /** Members per room on the other hubs. */
  rooms(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const peer of this.#peers.values()) {
      for (const [room, names] of peer.rooms) {
        counts.set(room, (counts.get(room) ?? 0) + names.size);
      }
    }
    return counts;
  }

  /**
   * Notes that a peer was heard at `now` with presence at `seq` (a heartbeat, or a change
   * numbered `seq`: then `change` says whether `seq` follows the last one). Returns false
   * when this view may have missed something from that peer: ask it for a snapshot.
   */
  heard(origin: string, seq: number, now: number, change = false): boolean {
    const peer = this.#peers.get(origin);
    if (!peer) {
      const synced = this.#dropped.delete(origin);
      this.#peers.set(origin, { seq, heardAt: now, synced, rooms: new Map() });
      return false;
    }
    peer.heardAt = now;
    const expected = change ? peer.seq + 1 : peer.seq;
    peer.seq = seq;
    return seq === expected;
  }

  /** A member of a peer came into a room. */
  add(origin: string, room: string, name: string): void {
    const peer = this.#peers.get(origin);
    if (!peer) return;
    let names = peer.rooms.get(room);
    if (!names) peer.rooms.set(room, names = new Map());
    names.set(nameKey(name), name);
  }

  /** A member of a peer left a room. */
  remove(origin: string, room: string, name: string): void {
    const names = this.#peers.get(origin)?.rooms.get(room);
    if (!names) return;
    names.delete(nameKey(name));
    if (names.size === 0) this.#peers.get(origin)!.rooms.delete(room);
  }

  /**
   * Replaces a peer's members with a snapshot. Returns who came and went compared with what
   * this view held (nothing for a peer first heard now: its members are not news; all of them for
   * one dropped for silence that is back).
   */
  replace(
    origin: string,
    seq: number,
    rooms: Record<string, string[]>,
    now: number,
  ): { joined: Change[]; left: Change[] } {
    const before = this.#peers.get(origin);
    // One dropped for silence is back: its members are news again, whichever of its snapshot
    // and its heartbeat (see heard) comes first after an outage.
    const back = before === undefined && this.#dropped.delete(origin);
    const next = new Map<string, Map<string, string>>();
    for (const [room, names] of Object.entries(rooms)) {
      if (names.length > 0) next.set(room, new Map(names.map((name) => [nameKey(name), name])));
    }
    this.#peers.set(origin, { seq, heardAt: now, synced: true, rooms: next });
    const joined: Change[] = [];
    const left: Change[] = [];
    if (!before?.synced && !back) return { joined, left };
    const had = before?.rooms ?? new Map<string, Map<string, string>>();
    for (const [room, names] of next) {
      for (const [key, name] of names) {
        if (!had.get(room)?.has(key)) joined.push({ room, name });
      }
    }
    for (const [room, names] of had) {
      for (const [key, name] of names) if (!next.get(room)?.has(key)) left.push({ room, name });
    }
    return { joined, left };
  }

  /**
   * Forgets a peer; returns its members, who have now left. `silent` marks one that went
   * quiet (not one that said goodbye), so that it is welcomed back if it returns.
   */
  drop(origin: string, silent = false): Change[] {
    const peer = this.#peers.get(origin);
    if (!peer) return [];
    this.#peers.delete(origin);
    if (silent) {
      this.#dropped.add(origin);
      // Crashed instances never come back: remember only the recent ones.
      if (this.#dropped.size > 1000) this.#dropped.delete(this.#dropped.values().next().value!);
    }
    const gone: Change[] = [];
    for (const [room, names] of peer.rooms) {
      for (const name of names.values()) gone.push({ room, name });
    }
    return gone;
  }

  /** Peers not heard from since `cutoff`. */
  silentSince(cutoff: number): string[] {
    return [...this.#peers].filter(([, peer]) => peer.heardAt < cutoff).map(([origin]) => origin);
  }
}
