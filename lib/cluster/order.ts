/**
 * One room's messages in id order, each once, whatever order they arrive in.
 *
 * With a shared store, messages reach a hub from every instance, and one stored after another
 * may arrive first (each instance publishes when its own store call returns). A room's order
 * knows the next id to deliver: a message with that id goes out, and then any held ones that
 * follow it; one further ahead is held, and after a short wait the store fills the gap (a
 * message lost in transit, or one whose author's instance died before publishing). What the store
 * no longer keeps is skipped. Ids already delivered are dropped: a resend, or the same message by
 * two ways (its envelope and the store).
 *
 * The feed (lib/cluster/feed.ts) owns one per room with members; all it needs from outside (the store's reads,
 * delivery, timers) comes through {@link OrderHost}, so the rules are tested in-process with a
 * fake store and a fake clock (tests/order_test.ts).
 */

import type { Envelope } from "./broker.ts";
import { type HistoryStore, when } from "../store/history.ts";

export type MessageEnvelope = Extract<Envelope, { kind: "message" }>;

/** What a room's order needs from the feed. */
export interface OrderHost {
  /** The store's reads: where a room stands, and what came after an id. */
  readonly store: Pick<HistoryStore, "head" | "after" | "epoch">;
  /** Delivers one message to the room, in order. */
  deliver(envelope: MessageEnvelope): void;
  /**
   * A message that will not be delivered here: one from before the room's start (its welcomes
   * carried it), or a second copy of one delivered. Its author may still wait for its
   * acknowledgement.
   */
  passed(envelope: MessageEnvelope): void;
  /** Runs `run` after `ms` milliseconds; returns a handle for {@link cancel}. */
  later(run: () => void, ms: number): unknown;
  cancel(timer: unknown): void;
  /** How long a message waits for an earlier one before the store fills the gap. */
  readonly gapMs: number;
}

/** When the store could not be read, how long until it is tried again. */
const RETRY_MS = 1000;

export class RoomOrder {
  /** The id of the next message to deliver; unknown until the store said where the room is. */
  #next: number | undefined;
  /** Messages that arrived ahead of an earlier one, by id. */
  #held: Map<number, MessageEnvelope> | undefined;
  #timer: unknown;
  #stopped = false;

  constructor(readonly room: string, readonly host: OrderHost) {}

  /** Whether a message with this id was delivered here already. */
  delivered(id: number): boolean {
    return this.#next !== undefined && id < this.#next;
  }

  /** Whether the room's position is known (a welcome read it, or a catch-up did). */
  get known(): boolean {
    return this.#next !== undefined;
  }

  /** The store's last id in the room, as a welcome read it: delivery starts after it. */
  startAt(head: number): void {
    if (this.#next !== undefined || this.#stopped) return;
    this.#next = head + 1;
    this.#drain();
  }

  /** A stored message for this room, in the store's current epoch. */
  accept(envelope: MessageEnvelope): void {
    if (this.#stopped) return;
    const id = envelope.message.id;
    if (this.#next === undefined || id > this.#next) {
      // Unknown position (a welcome still reading, or one that failed), or one missing before
      // it: wait a moment, then catch up from the store.
      (this.#held ??= new Map()).set(id, envelope);
      this.#arm(this.host.gapMs);
      return;
    }
    if (id < this.#next) return this.host.passed(envelope);
    this.host.deliver(envelope);
    this.#next = id + 1;
    if (this.#held?.size) this.#drain();
  }

  /**
   * The store moved to a new id space: forget the position and what is held (ids of the old
   * space), and read where the room stands in the new one.
   */
  reset(): void {
    if (this.#stopped) return;
    this.#next = undefined;
    this.#held = undefined;
    this.#disarm();
    when(() => this.host.store.head(this.room), (head) => this.startAt(head), () => {});
  }

  /**
   * Brings the room up to date from the store: where it stands, when that is not known yet
   * (its first welcome failed), and what is missing before the held messages or after the last
   * one delivered. What the store no longer keeps is skipped; when the store cannot answer, it
   * tries again a second later.
   */
  catchUp(): void {
    if (this.#stopped) return;
    const retry = () => this.#arm(RETRY_MS);
    if (this.#next === undefined) {
      return void when(() => this.host.store.head(this.room), (head) => {
        if (this.#stopped || this.#next !== undefined) return;
        // Held messages were never delivered here: start from the first of them.
        this.#next = this.#held?.size ? Math.min(...this.#held.keys()) : head + 1;
        this.#drain();
      }, retry);
    }
    const epoch = this.host.store.epoch;
    when(() => this.host.store.after(this.room, this.#next! - 1), (found) => {
      if (this.#stopped || this.#next === undefined) return;
      for (const message of found.messages) {
        if (message.id < this.#next) continue;
        if (message.id > this.#next) break;
        this.accept(this.#held?.get(message.id) ?? { kind: "message", origin: "", epoch, message });
      }
      const held = this.#held;
      if (held?.size && Math.min(...held.keys()) > this.#next) {
        // What lies between is no longer kept: go on from the first held message.
        this.#next = Math.min(...held.keys());
        this.#drain();
      }
    }, retry);
  }

  /** The room is gone (no members here): no timers, and late answers change nothing. */
  stop(): void {
    this.#stopped = true;
    this.#held = undefined;
    this.#disarm();
  }

  /** The hub cancelled every timer it runs (shutting down): forget the gap timer's handle. */
  timersCleared(): void {
    this.#timer = undefined;
  }

  /** Delivers held messages that are next in line. */
  #drain(): void {
    const held = this.#held;
    if (!held || this.#next === undefined) return;
    for (const [id, envelope] of [...held]) {
      if (id >= this.#next) continue;
      held.delete(id);
      this.host.passed(envelope);
    }
    let next: MessageEnvelope | undefined;
    while ((next = held.get(this.#next)) !== undefined) {
      held.delete(this.#next);
      this.host.deliver(next);
      this.#next++;
    }
    if (held.size > 0) this.#arm(this.host.gapMs);
    else this.#disarm();
  }

  #arm(ms: number): void {
    if (this.#timer !== undefined) return;
    const timer = this.#timer = this.host.later(() => {
      if (this.#timer === timer) this.#timer = undefined;
      this.catchUp();
    }, ms);
  }

  #disarm(): void {
    if (this.#timer === undefined) return;
    this.host.cancel(this.#timer);
    this.#timer = undefined;
  }
}
