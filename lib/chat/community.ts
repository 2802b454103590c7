/**
 * A run community: moderators' actions, rooms' topics, private messages (issue 17).
 *
 * Who may do what comes from a member's signed token (lib/transport/identity.ts): moderators
 * `/kick`, `/mute`, `/unmute` and set `/topic` in the room they are in; admins also `/ban` and
 * `/unban`, everywhere. A mute, a ban and a topic are rulings: kept by the store (so they outlive
 * a restart with `--data` or `--redis`) and sent to every hub, each of which keeps them all and
 * applies them to its own members. A kick and a private message go to the hubs with the room
 * open, and act on the member who holds the name there.
 *
 * Targets are names (their key: case and look-alikes folded) or, for bans, addresses. A verified
 * user's name is its token's, so a mute or ban by name follows the person; a guest can come back
 * under another name (its address can be banned).
 */

import type { CommunityEnvelope } from "../cluster/broker.ts";
import type { Feed } from "../cluster/feed.ts";
import type { Action, CommunityMessage } from "../protocol/commands.ts";
import { CloseCode, type Ref, type ServerEvent } from "../protocol/protocol.ts";
import { nameKey, quote } from "../protocol/text.ts";
import { type HistoryStore, type Ruling, rulingId, when } from "../store/history.ts";
import { addressGroup, canonical } from "../base/address.ts";
import type { Logger } from "../base/log.ts";
import { guestName } from "./join.ts";
import { refField } from "./replies.ts";
import type { Delivery, Member, Room } from "./room.ts";

/** What the community works with: the hub's rooms and members, and how to reach other hubs. */
export interface CommunityParts {
  store: HistoryStore;
  feed: Feed;
  send: Delivery;
  now: () => number;
  /** A room the hub has open. */
  room(name: string): Room | undefined;
  /** A member of this hub by connection id (an envelope's actor). */
  member(id: string): Member | undefined;
  /** Every member of this hub. */
  everyone(): Iterable<Member>;
  /** A kept message changed (a deletion): encoded history must be encoded again. */
  changed(): void;
  /** Where moderators' actions are logged (who did what, where). */
  log?: Logger | undefined;
}

type Moderate = Extract<CommunityMessage, { type: "moderate" }>;

const PAST: Record<Action, string> = {
  kick: "removed",
  mute: "muted",
  unmute: "unmuted",
  ban: "banned",
  unban: "unbanned",
};

/** Whom a ruling is about: a name's key, or an address (IPv6 by its /64, as limits count). */
function targetOf(msg: Moderate): string {
  return msg.address ? addressKey(msg.target) : `name:${nameKey(msg.target)}`;
}

function addressKey(address: string): string {
  return `addr:${addressGroup(canonical(address))}`;
}

/** A time people can read, with its date: `2026-12-04 18:30 UTC`. */
function dated(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime())
    ? "a very long time from now"
    : `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export class Community {
  readonly #parts: CommunityParts;
  /** Every ruling in force, by {@link rulingId}. */
  readonly #rulings = new Map<string, Ruling>();
  /**
   * How many of them are mutes and bans: every message asks whether its member is muted, every
   * connection whether it is banned, and usually there are none.
   */
  readonly #counts = { mute: 0, ban: 0, topic: 0 };

  constructor(parts: CommunityParts) {
    this.#parts = parts;
    // Rulings made before this hub started (a restart, or another instance).
    const { store } = parts;
    if (store.rulings) {
      when(() => store.rulings!(), (list) => {
        for (const ruling of list) this.#keepRuling(rulingId(ruling), ruling);
        // Those that ended while nobody looked leave the store too.
        for (const id of [...this.#rulings.keys()]) this.#active(id);
      }, () => {});
    }
  }

  /** The room's topic, if it has one. */
  topicOf(room: string): string | undefined {
    return this.#active(rulingId({ kind: "topic", room, target: "" }))?.text;
  }

  /** A ban that keeps `name` (or, with `address`, that address) out, if any. */
  banned(name: string | undefined, address: string | undefined): Ruling | undefined {
    if (this.#counts.ban === 0) return undefined;
    return (name === undefined
      ? undefined
      : this.#active(rulingId({ kind: "ban", room: "*", target: `name:${nameKey(name)}` }))) ??
      (address === undefined
        ? undefined
        : this.#active(rulingId({ kind: "ban", room: "*", target: addressKey(address) })));
  }

  /** Whether the name a member asks for (`/nick`) is banned: then it is told so. */
  bannedName(member: Member, name: string, ref: Ref | undefined): boolean {
    const shown = member.guest ? guestName(name) : name;
    if (!this.banned(shown, undefined)) return false;
    this.#error(member, "forbidden", `the name ${quote(shown)} is banned here`, ref);
    return true;
  }

  /**
   * Whether the member may not speak (say, act, send privately, or rename to get out of it):
   * if muted, it is told why and until when, and the answer is true.
   */
  silenced(member: Member, ref: Ref | undefined): boolean {
    // Every message asks: with no mute anywhere (the usual case) that costs one check.
    if (member.muted === undefined && !this.#anyMute()) return false;
    const room = member.room.name;
    const mute =
      this.#active(rulingId({ kind: "mute", room, target: `name:${nameKey(member.name)}` })) ??
        (member.muted && member.muted.room === room
          ? this.#active(rulingId(member.muted))
          : undefined);
    if (!mute) return false;
    const until = mute.until === 0 ? "until a moderator unmutes you" : `until ${dated(mute.until)}`;
    this.#error(member, "muted", `you are muted in #${room} ${until}`, ref);
    return true;
  }

  /** A member's moderation, topic or private message. */
  handle(member: Member, msg: CommunityMessage): void {
    switch (msg.type) {
      case "msg":
        return this.#private(member, msg.to, msg.text, msg.ref);
      case "topic":
        return this.#topic(member, msg.topic, msg.ref);
      case "moderate":
        return this.#moderate(member, msg);
      case "delete":
        return this.#delete(member, msg.id, msg.ref);
    }
  }

  /** What another hub (or this one) did: rulings kept, actions applied to members here. */
  received(envelope: CommunityEnvelope, own: boolean): void {
    const actor = own && envelope.actor !== undefined
      ? this.#parts.member(envelope.actor)
      : undefined;
    switch (envelope.kind) {
      case "ruling":
        return this.#ruled(envelope.ruling, envelope.lifted === true, actor, envelope.ref);
      case "kick": {
        if (envelope.room === "*") return this.#removed(envelope.sub, envelope.name, envelope.by);
        const room = this.#parts.room(envelope.room);
        if (!room || envelope.name === undefined) return;
        const event: ServerEvent = {
          type: "moderated",
          room: room.name,
          action: "kick",
          name: envelope.name,
          by: envelope.by,
          ...(envelope.reason ? { reason: envelope.reason } : {}),
          ts: envelope.ts,
        };
        this.#tell(room, event, actor, envelope.ref);
        const target = room.names.holder(envelope.name!);
        const why = envelope.reason ? `: ${envelope.reason}` : "";
        target?.conn.close(CloseCode.removed, `removed by ${envelope.by}${why}`.slice(0, 120));
        return;
      }
      case "delete": {
        this.#parts.changed();
        const room = this.#parts.room(envelope.room);
        const { id, by, ts } = envelope;
        if (room) {
          this.#tell(room, { type: "deleted", room: room.name, id, by, ts }, actor, envelope.ref);
        }
        return;
      }
      case "private": {
        const room = this.#parts.room(envelope.room);
        const to = room?.names.holder(envelope.to);
        const { from, text, ts } = envelope;
        const event: ServerEvent = { type: "private", from, to: envelope.to, text, ts };
        if (to && to !== actor) this.#parts.send.to(to, event);
        if (actor) this.#parts.send.to(actor, { ...event, ...refField(envelope.ref) });
        return;
      }
    }
  }

  /** Closes every member of any room with this user id or name, on every hub (server API). */
  removeEverywhere(who: { sub?: string; name?: string }, by: string): void {
    this.#parts.log?.info("moderation", { action: "disconnect", by, ...who });
    this.#parts.feed.community({ kind: "kick", room: "*", ...who, by, ts: this.#parts.now() });
  }

  /** Deletes a kept message as `by` (the server API); false when there is none. */
  async deleteAs(room: string, id: number, by: string): Promise<boolean> {
    const gone = await this.#parts.store.remove?.(room, id);
    if (!gone) return false;
    this.#parts.log?.info("moderation", { action: "delete", by, room, id, author: gone.from });
    this.#parts.feed.community({ kind: "delete", room, id, by, ts: this.#parts.now() });
    return true;
  }

  /** The members here with this user id or name leave, each room told. */
  #removed(sub: string | undefined, name: string | undefined, by: string): void {
    const key = name === undefined ? undefined : nameKey(name);
    const ts = this.#parts.now();
    for (const member of [...this.#parts.everyone()]) {
      const matches = (sub !== undefined && member.identity?.sub === sub) ||
        (key !== undefined && nameKey(member.name) === key);
      if (!matches) continue;
      const room = member.room;
      this.#tell(
        room,
        { type: "moderated", room: room.name, action: "kick", name: member.name, by, ts },
        undefined,
        undefined,
      );
      member.conn.close(CloseCode.removed, `removed by ${by}`);
    }
  }

  #private(member: Member, to: string, text: string, ref: Ref | undefined): void {
    if (this.silenced(member, ref)) return;
    const room = member.room;
    if (!room.names.taken(to)) {
      return this.#error(member, "not_found", `no one named ${quote(to)} in #${room.name}`, ref);
    }
    this.#parts.feed.community({
      kind: "private",
      room: room.name,
      from: member.name,
      to,
      text,
      ts: this.#parts.now(),
      actor: member.conn.id,
      ...refField(ref),
    });
  }

  #delete(member: Member, id: number, ref: Ref | undefined): void {
    if (!this.#may(member, "moderator", "delete messages", ref)) return;
    const { store, feed } = this.#parts;
    const room = member.room.name;
    if (!store.remove) return this.#error(member, "unavailable", "this store cannot delete", ref);
    when(
      () => store.remove!(room, id),
      (gone) => {
        if (!gone) {
          return this.#error(member, "not_found", `no message ${id} is kept in #${room}`, ref);
        }
        this.#parts.log?.info("moderation", {
          action: "delete",
          by: member.name,
          room,
          id,
          author: gone.from,
        });
        feed.community({
          kind: "delete",
          room,
          id,
          by: member.name,
          ts: this.#parts.now(),
          actor: member.conn.id,
          ...refField(ref),
        });
      },
      (error) =>
        this.#error(member, "unavailable", `not deleted: ${(error as Error).message}`, ref),
    );
  }

  #topic(member: Member, text: string | undefined, ref: Ref | undefined): void {
    const room = member.room.name;
    if (text === undefined) {
      const topic = this.topicOf(room) ?? "";
      return this.#parts.send.to(member, {
        type: "topic",
        room,
        topic,
        ts: this.#parts.now(),
        ...refField(ref),
      });
    }
    if (!this.#may(member, "moderator", "set the topic", ref)) return;
    const ruling: Ruling = {
      kind: "topic",
      room,
      target: "",
      shown: "",
      until: 0,
      by: member.name,
      ts: this.#parts.now(),
      text,
    };
    this.#keep(member, ruling, text === "", ref);
  }

  #moderate(member: Member, msg: Moderate): void {
    const { action, ref } = msg;
    const admin = action === "ban" || action === "unban";
    if (!this.#may(member, admin ? "admin" : "moderator", `${action} someone`, ref)) return;
    const room = member.room;
    const now = this.#parts.now();
    // By name, not by address: an address may be a whole office's, and an admin may mean it.
    const self = !msg.address && nameKey(msg.target) === nameKey(member.name);
    if (self && (action === "kick" || action === "mute" || action === "ban")) {
      return this.#error(member, "forbidden", `you cannot ${action} yourself`, ref);
    }
    if (action === "kick") {
      if (!room.names.taken(msg.target)) {
        return this.#error(
          member,
          "not_found",
          `no one named ${quote(msg.target)} in #${room.name}`,
          ref,
        );
      }
      this.#parts.log?.info("moderation", {
        action,
        by: member.name,
        room: room.name,
        target: msg.target,
        ...(msg.reason ? { reason: msg.reason } : {}),
      });
      return this.#parts.feed.community({
        kind: "kick",
        room: room.name,
        name: msg.target,
        by: member.name,
        ...(msg.reason ? { reason: msg.reason } : {}),
        ts: now,
        actor: member.conn.id,
        ...refField(ref),
      });
    }
    const kind = action === "mute" || action === "unmute" ? "mute" : "ban";
    const ruling: Ruling = {
      kind,
      room: kind === "ban" ? "*" : room.name,
      target: targetOf(msg),
      shown: msg.target,
      until: msg.durationMs === undefined ? 0 : now + msg.durationMs,
      by: member.name,
      ts: now,
      ...(msg.reason ? { reason: msg.reason } : {}),
    };
    const lifting = action === "unmute" || action === "unban";
    // A mute is for someone here (a typo would mute nobody, and tell the room someone was);
    // a ban may come before its target does.
    if (action === "mute" && !room.names.taken(msg.target)) {
      return this.#error(
        member,
        "not_found",
        `no one named ${quote(msg.target)} in #${room.name}`,
        ref,
      );
    }
    if (lifting && !this.#active(rulingId(ruling))) {
      return this.#error(member, "not_found", `${quote(msg.target)} is not ${PAST[kind]}`, ref);
    }
    this.#keep(member, ruling, lifting, ref);
  }

  /** Stores a ruling (or its lifting), then tells every hub; an error if the store cannot. */
  #keep(member: Member, ruling: Ruling, lifted: boolean, ref: Ref | undefined): void {
    const { store, feed } = this.#parts;
    const id = rulingId(ruling);
    when(
      () => lifted ? store.lift?.(id) : store.rule?.(ruling),
      () => {
        this.#parts.log?.info("moderation", {
          action: lifted ? `lift ${ruling.kind}` : ruling.kind,
          by: member.name,
          room: ruling.room,
          ...(ruling.kind === "topic" ? {} : { target: ruling.shown }),
          ...(ruling.until ? { until: new Date(ruling.until).toISOString() } : {}),
          ...(ruling.reason ? { reason: ruling.reason } : {}),
        });
        feed.community({
          kind: "ruling",
          ruling,
          ...(lifted ? { lifted: true as const } : {}),
          actor: member.conn.id,
          ...refField(ref),
        });
      },
      (error) => this.#error(member, "unavailable", `not kept: ${(error as Error).message}`, ref),
    );
  }

  /** A ruling made or lifted anywhere: kept, and applied to this hub's members. */
  #ruled(ruling: Ruling, lifted: boolean, actor: Member | undefined, ref: Ref | undefined): void {
    const id = rulingId(ruling);
    if (lifted) this.#dropRuling(id);
    else this.#keepRuling(id, ruling);
    const { ts, by } = ruling;
    if (ruling.kind === "topic") {
      const room = this.#parts.room(ruling.room);
      const event: ServerEvent = {
        type: "topic",
        room: ruling.room,
        topic: ruling.text ?? "",
        by,
        ts,
      };
      if (room) this.#tell(room, event, actor, ref);
      return;
    }
    const action: Action = ruling.kind === "mute"
      ? (lifted ? "unmute" : "mute")
      : (lifted ? "unban" : "ban");
    const event = (room: string, name = ruling.shown): ServerEvent => ({
      type: "moderated",
      room,
      action,
      name,
      by,
      ...(ruling.reason ? { reason: ruling.reason } : {}),
      ...(ruling.until > 0 && !lifted ? { until: ruling.until } : {}),
      ts,
    });
    if (ruling.kind === "mute") {
      const room = this.#parts.room(ruling.room);
      if (!room) return;
      // The member muted here keeps its mute if it renames.
      const holder = ruling.target.startsWith("name:")
        ? room.names.holder(ruling.shown)
        : undefined;
      if (holder) holder.muted = lifted ? undefined : ruling;
      return this.#tell(room, event(room.name), actor, ref);
    }
    // A ban: every member it covers leaves, and its rooms hear why.
    if (lifted) {
      if (actor) this.#parts.send.to(actor, { ...event(actor.room.name), ...refField(ref) });
      return;
    }
    const out = [...this.#parts.everyone()].filter((m) =>
      this.banned(m.name, m.conn.address) === ruling
    );
    const byAddress = ruling.target.startsWith("addr:");
    // Its maker hears what it made (with the address), once, before anyone is closed (it may
    // be among them).
    if (actor) this.#parts.send.to(actor, { ...event(actor.room.name), ...refField(ref) });
    const told = new Set<Room>();
    for (const member of out) {
      // A ban by address names the member in the room, never the address.
      const skip = actor?.room === member.room ? actor : undefined;
      if (byAddress) {
        this.#parts.send.toRoom(member.room, event(member.room.name, member.name), skip);
      } else if (!told.has(member.room)) {
        told.add(member.room);
        this.#parts.send.toRoom(member.room, event(member.room.name), skip);
      }
      member.conn.close(CloseCode.removed, `banned by ${by}`);
    }
  }

  /** An event to a room's members here; the actor (if here) gets it with its `ref`. */
  #tell(room: Room, event: ServerEvent, actor: Member | undefined, ref: Ref | undefined): void {
    const inRoom = actor !== undefined && actor.room === room;
    this.#parts.send.toRoom(room, event, inRoom ? actor : undefined);
    if (actor) this.#parts.send.to(actor, { ...event, ...refField(ref) } as ServerEvent);
  }

  /** Whether any mute is kept (in force or not yet noticed to have ended). */
  #anyMute(): boolean {
    return this.#counts.mute > 0;
  }

  #keepRuling(id: string, ruling: Ruling): void {
    if (!this.#rulings.has(id)) this.#counts[ruling.kind]++;
    this.#rulings.set(id, ruling);
  }

  #dropRuling(id: string): void {
    const ruling = this.#rulings.get(id);
    if (ruling) this.#counts[ruling.kind]--;
    this.#rulings.delete(id);
  }

  /** A ruling in force (one that has ended is dropped). */
  #active(id: string): Ruling | undefined {
    const ruling = this.#rulings.get(id);
    if (ruling && ruling.until > 0 && ruling.until <= this.#parts.now()) {
      this.#dropRuling(id);
      // Every hub that notices lifts it: a stored ruling that ended is not read at every start.
      when(() => this.#parts.store.lift?.(id), () => {}, () => {});
      return undefined;
    }
    return ruling;
  }

  /** Whether the member's token gives it `role` (an admin may do what a moderator may). */
  #may(member: Member, role: "moderator" | "admin", what: string, ref: Ref | undefined): boolean {
    const has = member.identity?.role;
    if (has === "admin" || (role === "moderator" && has === "moderator")) return true;
    this.#error(
      member,
      "forbidden",
      `only ${role}s may ${what}; your token does not say you are one`,
      ref,
    );
    return false;
  }

  #error(
    member: Member,
    code: "muted" | "forbidden" | "not_found" | "unavailable",
    message: string,
    ref: Ref | undefined,
  ): void {
    this.#parts.send.to(member, { type: "error", code, message, ...refField(ref) });
  }
}
