/**
 * The send contract (docs/PROTOCOL.md): every `say` gets exactly one answer. Its acknowledgement
 * (its own message back, with its `ref`) means stored and delivered in id order; an error means
 * nobody will receive it; `unknown` means the store did not say in time, and the message is
 * published (and acknowledged) if the store answers after all. A store that moved to a new epoch
 * (it lost its data, or went back in time) refused it: the hub rebases and it is stored once more.
 *
 * The hub gives this the few things it needs (lib/chat/hub.ts); the rules are tested through the hub
 * with stores that refuse, stall or answer late (tests/hub_test.ts, tests/cluster_test.ts).
 */

import type { Envelope } from "../cluster/broker.ts";
import {
  type Draft,
  type HistoryStore,
  type Message,
  messageOf,
  type Stored,
  StoreReset,
  Unconfirmed,
  when,
} from "../store/history.ts";
import type { Ref, ServerEvent } from "../protocol/protocol.ts";
import type { MessageEnvelope } from "../cluster/order.ts";
import { asAck, asEvent, refField } from "./replies.ts";
import { type Delivery, type Member, type Room, type WaitingAck, WaitingAcks } from "./room.ts";
import type { Feed } from "../cluster/feed.ts";

/** What sending needs of the hub, for authors of type `A`. */
export interface SendHost<A> {
  readonly store: HistoryStore;
  readonly origin: string;
  /** An author's connection id (envelopes name their actor by it). */
  idOf(author: A): string;
  /** Whether an author is still connected and in the room named. */
  present(author: A, room: string): boolean;
  /** Moves the hub to the store's epoch if it is not there yet. */
  rebaseIfNeeded(): void;
  /** Whether the hub delivered the room's message with this id already. */
  delivered(room: string, id: number): boolean;
  /** Whether the room has members on this hub (its messages are delivered here). */
  hosts(room: string): boolean;
  /** Acknowledges the author when its stored message is delivered, however it comes. */
  awaitAck(message: Message, epoch: string, author: A, ref: Ref | undefined): void;
  publish(envelope: Envelope): void;
  /** Sends one event to the author, and whether it takes acknowledgements at all. */
  tell(author: A, event: ServerEvent): void;
  acks(author: A): boolean;
}

export class Sender<A> {
  /**
   * Keys whose message the store has not said it kept (an `unknown` went out), by room and key:
   * its answer when it comes. A resend of such a key that the store refuses is unsure too, not
   * "not sent": the first copy may be kept, and is acknowledged for both when it is.
   */
  readonly #unsure = new Map<string, Promise<Stored>>();

  constructor(readonly host: SendHost<A>) {}

  /** Stores a message from `author` in `room`, then publishes it; answers the author once. */
  say(
    author: A,
    room: string,
    draft: Draft,
    ref: Ref | undefined,
    key: string | undefined,
    again = false,
  ): void {
    const host = this.host;
    when(
      () => host.store.append(room, draft, key),
      (stored) => this.#stored(author, stored, ref),
      (error) => {
        if (error instanceof StoreReset && !again) {
          // Nothing was stored: move to the store's new epoch, then store it once more.
          return void when(() => host.store.refresh?.(), () => {
            host.rebaseIfNeeded();
            if (host.present(author, room)) this.say(author, room, draft, ref, key, true);
          }, () => this.#notSent(author, error, ref));
        }
        host.rebaseIfNeeded();
        const unsure = key === undefined ? undefined : `${room}\n${key}`;
        const earlier = unsure === undefined ? undefined : this.#unsure.get(unsure);
        if (error instanceof Unconfirmed || earlier !== undefined) {
          const reason = error instanceof Unconfirmed
            ? error.message
            : "its first copy is not confirmed yet";
          host.tell(author, {
            type: "unknown",
            message: `not sure your message was kept: ${reason}; it is delivered if it ` +
              `was${key === undefined ? "" : " (a resend with the same key will not show twice)"}`,
            ...refField(ref),
            ...(key === undefined ? {} : { key }),
          });
          const later = error instanceof Unconfirmed ? error.later : earlier!;
          if (unsure !== undefined && error instanceof Unconfirmed) {
            this.#unsure.set(unsure, later);
            const settle = () => {
              if (this.#unsure.get(unsure) === later) this.#unsure.delete(unsure);
            };
            later.then(settle, settle);
          }
          later.then((stored) => this.#stored(author, stored, ref), () => {});
          return;
        }
        this.#notSent(author, error, ref);
      },
    );
  }

  #notSent(author: A, error: unknown, ref: Ref | undefined): void {
    const message = `your message was not sent: the server could not store it (${
      (error as Error).message
    })`;
    this.host.tell(author, { type: "error", code: "unavailable", message, ...refField(ref) });
  }

  /**
   * Publishes a stored message to every hub (each delivers a room's ids once, in order), and
   * sees that its author gets one acknowledgement, whichever way the message reaches this hub
   * first: its own envelope, a resend's, or the store filling a gap. One already delivered here
   * (the resend of a kept key, a late answer after the store caught up) is acknowledged now.
   */
  #stored(author: A, stored: Stored, ref: Ref | undefined): void {
    const host = this.host;
    const message = messageOf(stored);
    const epoch = stored.epoch ?? host.store.epoch;
    const here = host.present(author, message.room);
    const delivered = host.delivered(message.room, message.id);
    if (here && !delivered) host.awaitAck(message, epoch, author, ref);
    const envelope: MessageEnvelope = {
      kind: "message",
      origin: host.origin,
      epoch,
      message,
      actor: host.idOf(author),
    };
    if (ref !== undefined) envelope.ref = ref;
    host.publish(envelope);
    if (here && delivered && host.acks(author)) host.tell(author, asAck(message, ref));
    // Its author moved on, and nobody here is in the room any more: no delivery here will
    // acknowledge it, and it was kept (the event names its room).
    if (!here && !host.hosts(message.room) && host.acks(author)) {
      host.tell(author, asAck(message, ref));
    }
  }
}

/**
 * The sender of a hub's members: stored through `store`, published through the feed, answered
 * through `send`; `present` says whether a member is still in a room, `roomOf` finds a room here.
 */
export function memberSender(
  store: HistoryStore,
  feed: Pick<Feed, "origin" | "rebaseIfNeeded" | "delivered" | "publish">,
  send: Delivery,
  present: (member: Member, room: string) => boolean,
  roomOf: (name: string) => Room | undefined,
): Sender<Member> {
  return new Sender<Member>({
    store,
    origin: feed.origin,
    idOf: (member) => member.conn.id,
    present,
    rebaseIfNeeded: () => feed.rebaseIfNeeded(),
    delivered: (room, id) => feed.delivered(room, id),
    hosts: (room) => roomOf(room) !== undefined,
    awaitAck: (message, epoch, member, ref) => {
      const here = roomOf(message.room);
      if (here) (here.acks ??= new WaitingAcks()).set(message.id, { member, ref, message, epoch });
    },
    publish: (envelope) => feed.publish(envelope),
    tell: (member, event) => send.to(member, event),
    acks: (member) => member.view.acks,
  });
}

/**
 * A stored message reaches its room (in order): everyone gets it, and its author (if on this hub)
 * its copy with its `ref`, which is its acknowledgement: `author` as the envelope names it, or the
 * one waiting in the room's acknowledgements (the message came through another envelope, or from
 * the store).
 */
export function deliverStored(
  send: Delivery,
  room: Room,
  envelope: MessageEnvelope,
  author: Member | undefined,
): void {
  const event = asEvent(envelope.message);
  const waiting = room.acks?.take(event.id);
  let ref = envelope.ref;
  if (waiting && (author === undefined || author === waiting.member)) {
    author = waiting.member;
    ref = waiting.ref;
  }
  send.toRoom(room, event, author, event.id);
  // The author's copy is its acknowledgement; plain-text authors get none (the seed's rule).
  // It is owed even where the author's welcome carried the message (it spoke before its
  // welcome was read), and to an author who moved to another room while a shared store was
  // storing it (the event names its room).
  if (author?.view.acks) send.to(author, asAck(envelope.message, ref));
  if (waiting && waiting.member !== author && waiting.member.view.acks) {
    send.to(waiting.member, asAck(envelope.message, waiting.ref));
  }
  if (waiting?.also) answerEarlier(send, waiting, envelope.message);
}

/** The earlier asks for a message (resends of its key, each with its own ref) get their answers. */
function answerEarlier(send: Delivery, waiting: WaitingAck, message: Message): void {
  for (let ask = waiting.also; ask !== undefined; ask = ask.also) {
    if (ask.member.view.acks) send.to(ask.member, asAck(message, ask.ref));
  }
}

/**
 * A stored message that is not delivered live (the welcomes of its room carried it): an author
 * here still waiting for its acknowledgement gets it.
 */
export function ackPassed(send: Delivery, room: Room, envelope: MessageEnvelope): void {
  const waiting = room.acks?.take(envelope.message.id);
  if (!waiting) return;
  if (waiting.member.view.acks) {
    send.to(waiting.member, asAck(envelope.message, waiting.ref));
  }
  if (waiting.also) answerEarlier(send, waiting, envelope.message);
}

/** How a backend's publish (the server API, lib/transport/api.ts) ended. */
export type Published =
  | { ok: true; id: number; ts: number }
  | { ok: false; code: "unavailable" | "unknown"; message: string };

/** A publish waiting for its answer. */
interface Call {
  readonly id: string;
  done(result: Published): void;
}

/**
 * The sender of the server API's publishes: the same contract as a member's `say` (stored, then
 * delivered in order; or an error; or "unknown"), answered to a promise instead of a socket.
 */
export function callSender(
  store: HistoryStore,
  feed: Pick<Feed, "origin" | "rebaseIfNeeded" | "delivered" | "publish">,
): (room: string, draft: Draft) => Promise<Published> {
  let next = 0;
  const calls = new Map<string, Call>();
  const sender = new Sender<Call>({
    store,
    origin: feed.origin,
    idOf: (call) => call.id,
    present: () => false,
    rebaseIfNeeded: () => feed.rebaseIfNeeded(),
    delivered: (room, id) => feed.delivered(room, id),
    hosts: () => true, // answered by the publish below, wherever the room is
    awaitAck: () => {},
    publish: (envelope) => {
      // Stored: the envelope carries the message's id, which is the answer.
      if (envelope.kind === "message" && envelope.actor !== undefined) {
        calls.get(envelope.actor)?.done({
          ok: true,
          id: envelope.message.id,
          ts: envelope.message.ts,
        });
      }
      feed.publish(envelope);
    },
    tell: (call, event) => {
      if (event.type === "error") {
        call.done({ ok: false, code: "unavailable", message: event.message });
      }
      if (event.type === "unknown") {
        call.done({ ok: false, code: "unknown", message: event.message });
      }
    },
    acks: () => false,
  });
  return (room, draft) =>
    new Promise<Published>((resolve) => {
      const id = `api-${++next}`;
      const call: Call = {
        id,
        done(result) {
          calls.delete(id);
          resolve(result);
        },
      };
      calls.set(id, call);
      sender.say(call, room, draft, undefined, undefined);
    });
}
