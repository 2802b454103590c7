/**
 * A member's name changes: `/nick` (refused when the name is taken in the room), a name given
 * back to the member who wanted it when it frees up (`alice-2` becomes `alice` when `alice`
 * leaves), and a name given up when a member of another hub took it at the same moment and this
 * hub yields (lib/cluster/feed.ts decides which). The room hears each change through the feed.
 */

import type { Feed } from "../cluster/feed.ts";
import type { Ref } from "../protocol/protocol.ts";
import { quote } from "../protocol/text.ts";
import { guestName } from "./join.ts";
import { refField } from "./replies.ts";
import { type Delivery, type Member, type Room, withRef } from "./room.ts";

export class Naming {
  constructor(
    readonly feed: Feed,
    readonly send: Delivery,
    readonly now: () => number,
  ) {}

  /** `/nick NAME`: the member's wish from now on, and its name if the room has it free. */
  rename(member: Member, asked: string, ref: Ref | undefined): void {
    const room = member.room;
    if (member.identity && !member.identity.nick) {
      return this.send.to(member, {
        type: "error",
        code: "forbidden",
        message: "your name comes with your token; this server does not let you change it",
        ...refField(ref),
      });
    }
    const name = member.guest ? guestName(asked) : asked;
    if (room.names.holder(name) !== member && room.names.taken(name)) {
      return this.send.to(member, {
        type: "error",
        code: "name_taken",
        message: `name ${quote(name)} is taken in #${room.name}`,
        ...refField(ref),
      });
    }
    member.wanted = name;
    this.#set(member, name, true, ref);
  }

  /** A name freed up in `room`: a member here who wanted it (and got a suffix) takes it back. */
  freed(room: Room, name: string): void {
    const first = room.names.claimant(name);
    if (first) this.#set(first, first.wanted, false);
  }

  /** A member of another hub took `name` in `room` and this hub yields: its holder here moves. */
  yieldName(room: Room, name: string): void {
    const holder = room.names.holder(name);
    if (holder) this.#set(holder, room.names.free(holder.wanted), false);
  }

  /**
   * Gives a member another name, tells it, and tells every hub (the room hears it from there).
   * `asked`: it answers the member's `/nick`; otherwise it is news about the room, which a
   * welcome still being read will tell the member itself.
   */
  #set(member: Member, name: string, asked: boolean, ref?: Ref): void {
    const room = member.room;
    const from = member.name;
    room.names.rename(member, name);
    const ts = this.now();
    if (from !== name) this.feed.renamed(room.name, from, name, member.conn.id, ts);
    const event = withRef({ type: "renamed" as const, room: room.name, from, to: name, ts }, ref);
    this.send.to(member, event, undefined, asked ? undefined : room);
  }
}
