/**
 * The door's books (lib/door/door.ts): every open TCP connection counted against a budget, the ones
 * that have not sent a request yet (pending) counted in all and per address, and the descriptor
 * ceiling the budget learns when accept runs out of descriptors (lib/door/listener.ts notices
 * that). Per-connection state lives on the socket itself (one object per connection, no maps).
 */

import { addressGroup } from "../base/address.ts";
import type net from "node:net";
import { Metrics } from "../base/metrics.ts";

/** Descriptors kept free for everything else (the store, Redis, the door's own probe). */
const RESERVE = 32;
/** A learned descriptor ceiling holds this long, then the budget rises by RESERVE per step. */
const RELEARN_MS = 60_000;
const RELEARN_STEP_MS = 5_000;

/** Per-connection state, on the socket itself (one object per connection, no maps). */
export interface Tracked {
  address: string;
  port: number;
  /** Counted as pending (not yet upgraded). */
  pending: boolean;
  /** Requests read whose answers have not been handed to the socket yet (pipelined ones wait). */
  unanswered: number;
}
export const TRACKED = Symbol("natter.door");
export type TrackedSocket = net.Socket & { [TRACKED]?: Tracked | undefined };

/** Why a new connection may not wait for its request head: the waiting room is full. */
export interface Crowded {
  /** Full for everyone, or for the connection's address. */
  refused: "pending" | "pending_per_address";
  /** Pending connections from its address (its group) already. */
  fromAddress: number;
}

/** Closes a connection the door will not keep, counted under `reason` in `/metrics`. */
export function refuse(metrics: Metrics, socket: net.Socket, reason: string): void {
  Metrics.bump(metrics.refused, reason);
  socket.destroy();
}

export class DoorBudget {
  /** Open TCP connections: pending and upgraded. */
  sockets = 0;
  /** Connections that are not WebSockets (yet). */
  pending = 0;
  /** Connections accepted so far, kept or not: what the accept-loop watch compares. */
  accepted = 0;
  /** The cap on open TCP connections in force: `configured`, or lower once learned. */
  budget: number;
  /** The cap the options ask for. */
  readonly configured: number;
  /** Connections that are not WebSockets (yet), oldest first: what a stall sheds. */
  readonly waiting = new Set<TrackedSocket>();
  readonly #maxPending: number;
  readonly #maxPendingPerAddress: number;
  readonly #perAddress = new Map<string, number>();
  /** Open connections after the last accept: the ceiling, when the next accept fails. */
  #atLastAccept = 0;
  /**
   * When the budget was last lowered to a learned descriptor ceiling. Descriptors are shared
   * with the rest of the process (files, Redis, a raised limit), so a learned ceiling is not for
   * good: after {@link RELEARN_MS} without running out again, the budget rises back step by
   * step, and running out again teaches it anew.
   */
  #learnedAt = -Infinity;

  constructor(configured: number, maxPending: number, maxPendingPerAddress: number) {
    this.configured = configured;
    this.budget = configured;
    this.#maxPending = maxPending;
    this.#maxPendingPerAddress = maxPendingPerAddress;
  }

  /** The budget is spent: a new connection is closed as soon as it is accepted. */
  get full(): boolean {
    return this.sockets >= this.budget;
  }

  /**
   * Counts a new connection from `address` as open and pending, and tracks it on the socket;
   * or, when the waiting room is full for everyone or for its address, says so.
   */
  admit(socket: TrackedSocket, address: string): Tracked | Crowded {
    const group = addressGroup(address);
    const mine = this.#perAddress.get(group) ?? 0;
    // The per-address share applies only once the waiting room is half full: a proxy or a big
    // NAT (one address for many clients) may reconnect hundreds at once, and a lone address
    // may not fill the room on its own.
    const full = this.pending >= this.#maxPending;
    const crowded = this.pending >= this.#maxPending / 2;
    if (full || (crowded && mine >= this.#maxPendingPerAddress)) {
      return { refused: full ? "pending" : "pending_per_address", fromAddress: mine };
    }
    this.sockets++;
    this.pending++;
    this.#atLastAccept = this.sockets;
    this.#perAddress.set(group, mine + 1);
    const state: Tracked = {
      address,
      port: socket.remotePort ?? 0,
      pending: true,
      unanswered: 0,
    };
    socket[TRACKED] = state;
    this.waiting.add(socket);
    return state;
  }

  /**
   * The connection was upgraded: the socket now belongs to the WebSocket. It stops being
   * pending; it stays counted until its WebSocket is gone ({@link webSocketGone}).
   */
  upgraded(socket: TrackedSocket, state: Tracked | undefined): void {
    if (state) this.#release(state);
    this.waiting.delete(socket);
  }

  /** A connection that was not upgraded closed (or was shed): it counts no more. */
  closed(socket: TrackedSocket, state: Tracked | undefined): void {
    this.waiting.delete(socket);
    if (state?.pending) {
      this.#release(state);
      this.sockets--;
    }
  }

  /** An upgraded connection's WebSocket is gone (or its handshake failed). */
  webSocketGone(): void {
    this.sockets--;
  }

  /**
   * Accept stopped: Deno's accept loop only stops on an error, in practice "Too many open
   * files", so the ceiling is where the last accept left us. Stay under it from now on, with
   * room to spare.
   */
  learnCeiling(now: number): void {
    const ceiling = Math.max(this.#atLastAccept, this.sockets);
    this.budget = Math.min(this.budget, ceiling - Math.min(RESERVE, Math.ceil(ceiling / 4)));
    this.#learnedAt = now;
  }

  /**
   * Makes room at once: the newest connections that have not sent a request go first (counted
   * as refused for descriptors in `metrics`), until the open ones fit the budget.
   */
  shed(metrics: Metrics): void {
    const newest = [...this.waiting].reverse();
    for (const socket of newest) {
      if (this.sockets <= this.budget) break;
      refuse(metrics, socket, "descriptors");
      this.closed(socket, socket[TRACKED]);
    }
  }

  /** Once a learned ceiling is old enough, raises the budget one step back towards `configured`. */
  relax(now: number): void {
    if (this.budget < this.configured && now - this.#learnedAt > RELEARN_MS) {
      this.budget = Math.min(this.configured, this.budget + RESERVE);
      this.#learnedAt = now - RELEARN_MS + RELEARN_STEP_MS;
    }
  }

  /** A pending connection stops counting as pending (upgraded, or closed). */
  #release(state: Tracked): void {
    if (!state.pending) return;
    state.pending = false;
    this.pending--;
    const group = addressGroup(state.address);
    const left = (this.#perAddress.get(group) ?? 1) - 1;
    if (left > 0) this.#perAddress.set(group, left);
    else this.#perAddress.delete(group);
  }
}
