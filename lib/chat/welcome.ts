/**
 * A member's welcome: who is in the room, and (for a JSON client) the room's latest messages or
 * all it missed since its `since`, read from the store by the history desk (lib/chat/desk.ts).
 *
 * Membership starts before the store answers, so events that come meanwhile wait in the member's
 * pending queue and go out after the welcome, minus the messages the welcome already carried:
 * nothing falls between what the history holds and what is live. A store that cannot answer gets
 * a welcome without history and an `unavailable` error; live events still flow.
 */

import type { HistoryDesk } from "./desk.ts";
import type { Feed } from "../cluster/feed.ts";
import { when } from "../store/history.ts";
import type { Ref } from "../protocol/protocol.ts";
import {
  countIn,
  type Delivery,
  isIn,
  type Member,
  namesIn,
  type Welcoming,
  withRef,
} from "./room.ts";

export interface WelcomeOptions {
  /** Sent in the welcome, e.g. "natter/0.1.0". */
  server: string;
  /** Names listed in a big room's welcome (the count says the rest). */
  bigRoom: number;
  /** The room's topic, if it has one. */
  topic?: (room: string) => string | undefined;
}

export class Welcomer {
  constructor(
    readonly desk: HistoryDesk,
    readonly feed: Feed,
    readonly delivery: Delivery,
    readonly options: WelcomeOptions,
  ) {}

  /**
   * Welcomes a member to its room once the store has answered, then sends what came meanwhile.
   * `join`: the request it answers, if it came with one. A later welcome (the member joined
   * again before this one was read) supersedes it: the request still gets its answer, a notice.
   */
  welcome(member: Member, since: number | undefined, join?: { ref: Ref | undefined }): void {
    const { desk, feed, delivery } = this;
    const room = member.room;
    // A welcome to the same room on the same connection (the store's epoch changed while a
    // join's welcome was read) answers that join in its place.
    const previous = member.welcoming;
    if (join === undefined && previous?.room === room && previous.conn === member.conn) {
      join = previous.join;
      previous.join = undefined;
    }
    const mine: Welcoming = { room, conn: member.conn, join };
    member.welcoming = mine;
    // What was broadcast to it before is in this welcome or from a room it left, but for news no
    // welcome tells (a moderator's action in this room); what went to it alone (answers to its
    // requests) still goes, after the welcome (see Pending.keep and Pending.lasting).
    member.pending =
      member.pending?.filter((pending) =>
        pending.keep || (pending.lasting && pending.room === room)
      ) ?? [];
    room.version++; // it follows none of the room's broadcasts while its welcome is read
    // Who is here as membership starts: changes after this reach the member as events.
    const listed = member.view.listed(this.options.bigRoom);
    const present = { members: namesIn(room, feed.view, listed), count: countIn(room, feed.view) };
    // A JSON welcome carries history: reserved from the member's allowance before the read.
    const reserved = member.view.replays && desk.reserve(member) === 0;
    const server = this.options.server;
    const topic = this.options.topic?.(room.name);
    const fields = () => ({
      server,
      name: member.name,
      room: room.name,
      ...present,
      ...(topic ? { topic } : {}),
      ...(member.identity && member.identity.role !== "user" ? { role: member.identity.role } : {}),
    });
    const gone = () => {
      if (member.welcoming === mine && isIn(member, room)) {
        member.welcoming = undefined;
        return false;
      }
      if (reserved) desk.settle(member, 0);
      // Overtaken by a later join, or the member left: its join still gets an answer, on the
      // connection that asked (a page back within the grace has a new one, which asked nothing).
      if (mine.join && member.conn === mine.conn && member.conn.open) {
        const text = member.view.notice(`moved on from #${room.name} before its welcome was ready`);
        delivery.to(member, withRef({ type: "notice", text }, mine.join.ref));
      }
      return true;
    };
    when(
      () => desk.read(member, room.name, since, reserved),
      (found) => {
        if (gone()) return;
        room.version++; // its floor changes: the room's casts no longer know it
        feed.startAt(room.name, found.head);
        member.floor = Math.max(found.head, found.messages.at(-1)?.id ?? 0);
        const pending = member.pending ?? [];
        member.pending = undefined;
        delivery.frame(member, desk.welcome(member, fields(), found, reserved, mine.join?.ref));
        for (const { frame, id } of pending) {
          if (id === undefined || id > member.floor) delivery.frame(member, frame, id);
        }
      },
      (error) => {
        if (gone()) return;
        const pending = member.pending ?? [];
        member.pending = undefined;
        if (reserved) desk.settle(member, 0);
        delivery.frame(
          member,
          desk.welcome(member, fields(), { messages: [] }, false, mine.join?.ref),
        );
        delivery.to(member, {
          type: "error",
          code: "unavailable",
          message: `history is not available right now (${(error as Error).message})`,
        });
        for (const { frame, id } of pending) delivery.frame(member, frame, id);
      },
    );
  }
}
