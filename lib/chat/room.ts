/**
 * What the hub is made of: connections, members and rooms, who is in a room (here and on other
 * hubs), and delivery: an event to a member or a room, each frame encoded at most once per view,
 * held while a member's welcome is being read, never a message the welcome already carried.
 */

import type { Identity } from "./join.ts";
import type { Message, Ruling } from "../store/history.ts";
import type { TokenBucket } from "../base/limits.ts";
import type { Metrics } from "../base/metrics.ts";
import { RoomNames } from "./names.ts";
import type { Peers } from "../cluster/peers.ts";
import { CloseCode, type Format, type Ref, type ServerEvent } from "../protocol/protocol.ts";
import { type Frame, frameOf } from "./replies.ts";
import type { View } from "../protocol/views.ts";

/** What the hub needs of a client connection. */
export interface Connection {
  /** Unique for the life of the process. */
  readonly id: string;
  readonly format: Format;
  /** False once the connection is closing or closed; the hub then stops sending. */
  readonly open: boolean;
  /**
   * Sends one event (one line), now or packed with others at the end of the turn. `bytes` is
   * its UTF-8 length. `stream` is what the event was broadcast to (its room): connections that
   * get a stream's events one after another can share the frames they are packed into. Without
   * one, the event is this connection's alone. May throw; the hub then closes the connection.
   */
  send(event: string, bytes: number, stream?: object): void;
  /**
   * Right after it was sent an event broadcast to `stream`: follows that stream's broadcast for the
   * rest of the turn, so that the next events sent through the returned {@link Follow} reach it
   * with no call per recipient. Undefined where it cannot (or the connection has no such thing).
   * An event sent to it alone takes it out, and it then gets the broadcast's events one by one.
   */
  follow?(stream: object): Follow | undefined;
  /** Stops following for good: the broadcast's later events reach it only through `send`. */
  unfollow?(): void;
  close(code: number, reason: string): void;
  /** The client's address, where there is one (for bans by address). */
  readonly address?: string;
}

/** A stream's broadcast that connections follow this turn (lib/transport/outbox.ts's Cast). */
export interface Follow {
  /** It still carries events (this turn's; its audience did not change). */
  readonly live: boolean;
  /** Sends one event (one line, `bytes` of UTF-8) to every follower; returns how many got it. */
  send(event: string, bytes: number): number;
  /** It stops: its followers keep what they have; a new one takes the stream's next events. */
  freeze(): void;
}

/**
 * A room's broadcasts in one turn: the members that follow each view's {@link Follow}, and the
 * others (a welcome still being read, a member the turn's first broadcast skipped, a connection
 * that cannot follow), who get each event one by one. Made by the turn's first broadcast.
 */
export interface RoomTurn {
  /** The room's `version` it was made for: any change of members makes a new one. */
  readonly version: number;
  /** The highest `floor` of a follower: a message at or below it needs the member-by-member path. */
  readonly floor: number;
  readonly lanes: { readonly view: View; readonly cast: Follow }[];
  readonly others: Member[];
}

export interface Room {
  readonly name: string;
  /** Members in join order. */
  readonly members: Set<Member>;
  /** Who holds which name, and who waits for one (see lib/chat/names.ts). */
  readonly names: RoomNames<Member>;
  /**
   * Joins (a local member, named as it is when the summary goes, or a name from another hub)
   * and leaves not yet told, in a room above the big-room size (see lib/chat/presence.ts).
   */
  presence?: { joined: (Member | string)[]; left: string[] } | undefined;
  /** Authors here waiting for the acknowledgement of a stored message, by its id. */
  acks?: WaitingAcks | undefined;
  /** Counts changes of its members (joins, leaves, a member's new connection). */
  version: number;
  /** Its broadcasts this turn, when members follow them (see {@link RoomTurn}). */
  turn?: RoomTurn | undefined;
}

/** An author waiting for the acknowledgement of its stored message. */
export interface WaitingAck {
  readonly member: Member;
  readonly ref: Ref | undefined;
  readonly message: Message;
  /** The store's epoch it was stored under. */
  readonly epoch: string;
  /**
   * An earlier ask for the same message still waiting: a resend of its key (its own ref) that
   * came before the first copy's place in the room was known. Each ref gets its answer.
   */
  also?: WaitingAck | undefined;
}

/** `waiting` and every earlier ask for the same message, the earliest first. */
export function everyAsk(waiting: WaitingAck | undefined): WaitingAck[] {
  const all: WaitingAck[] = [];
  for (let ask = waiting; ask !== undefined; ask = ask.also) all.unshift(ask);
  return all;
}

/**
 * A room's authors waiting for acknowledgements, by message id. Usually one at a time (on one
 * instance a message is delivered as it is published), so the one waiting has a slot of its own:
 * a `Map` that empties after every message costs V8 a new table each time (6 % of the server's
 * time at 100 receivers; bench/RESULTS.md, twelfth session). More go to a map.
 */
export class WaitingAcks {
  #id = 0;
  #one: WaitingAck | undefined;
  #more: Map<number, WaitingAck> | undefined;

  set(id: number, waiting: WaitingAck): void {
    const before = this.#one !== undefined && this.#id === id ? this.#one : this.#more?.get(id);
    if (before !== undefined && (before.member !== waiting.member || before.ref !== waiting.ref)) {
      waiting.also = before;
    }
    if (this.#more?.has(id)) return void this.#more.set(id, waiting);
    if (this.#one === undefined || this.#id === id) {
      this.#id = id;
      this.#one = waiting;
    } else (this.#more ??= new Map()).set(id, waiting);
  }

  /** The author waiting for message `id`, no longer waiting. */
  take(id: number): WaitingAck | undefined {
    if (this.#one !== undefined && this.#id === id) {
      const waiting = this.#one;
      this.#one = undefined;
      return waiting;
    }
    const waiting = this.#more?.get(id);
    if (waiting !== undefined) this.#more!.delete(id);
    return waiting;
  }

  /** Every ask still waiting, each apart, no longer waiting (their room is closing). */
  takeAll(): WaitingAck[] {
    const all = [...(this.#one ? [this.#one] : []), ...(this.#more?.values() ?? [])]
      .flatMap(everyAsk);
    for (const ask of all) ask.also = undefined;
    this.#one = undefined;
    this.#more = undefined;
    return all;
  }
}

/** A welcome being read from the store (lib/chat/welcome.ts). */
export interface Welcoming {
  readonly room: Room;
  /** The connection it is for (a page back within the grace brings another). */
  readonly conn: Connection;
  /** The `join` it answers, if any; handed over to a welcome that takes its place. */
  join: { ref: Ref | undefined } | undefined;
}

/** An event for one member, kept until its welcome has gone out. */
export interface Pending {
  readonly frame: Frame;
  readonly id: number | undefined;
  /** The room it was broadcast to; undefined for an event to the member alone. */
  readonly room: Room | undefined;
  /**
   * It outlives a new welcome: an event to the member alone (an answer, an error, a private
   * message). A broadcast, or news to the member about its room (its name given back), does not:
   * the new welcome says where things stand.
   */
  readonly keep: boolean;
  /**
   * A broadcast whose news no welcome tells (a moderator's action, a deletion): it outlives a new
   * welcome to the same room (the store's epoch changed while the first one was read).
   */
  readonly lasting: boolean;
}

/** Whether a broadcast tells what a welcome to its room does not (see {@link Pending.lasting}). */
function lasting(event: ServerEvent): boolean {
  return event.type === "moderated" || event.type === "deleted";
}

export interface Member {
  /** Its connection: another one when its page comes back within the grace (lib/chat/linger.ts). */
  conn: Connection;
  /** What its format receives (lib/protocol/views.ts). */
  readonly view: View;
  /** The page's tab, when it names one (for the reload grace). */
  readonly session?: string | undefined;
  name: string;
  /** The name it asked for; `name` may carry a suffix where that one was taken. */
  wanted: string;
  /** Who it is, when it connected with a verified token (lib/chat/join.ts). */
  identity?: Identity | undefined;
  /** It came without a token to a server that verifies identities: its names carry the mark. */
  guest?: boolean;
  /** A mute it got here, which holds under another name too (lib/chat/community.ts). */
  muted?: Ruling | undefined;
  /** Filed by its room's names while it waits for `wanted`. */
  waitingFor?: string | undefined;
  room: Room;
  /** When its last `typing` was passed on. */
  typedAt: number;
  /** Messages up to this id came with its welcome; live ones start after it. */
  floor: number;
  /** Events that arrived while its welcome was being read from the store. */
  pending: Pending[] | undefined;
  /** The welcome being read for it: a later one (another join) supersedes it. */
  welcoming?: Welcoming | undefined;
  /** Its history allowance in bytes, made on its first reply that carries any. */
  replies?: TokenBucket | undefined;
  /** The room turn whose broadcast it follows, if any. */
  follows?: RoomTurn | undefined;
}

/** Whether a member is still in `room` (it may have left or moved while the store was read). */
export function isIn(member: Member, room: Room): boolean {
  return member.room === room && room.members.has(member);
}

/** A room's members here and on other hubs. */
export function countIn(room: Room, others: Peers): number {
  return room.members.size + (others.size > 0 ? others.count(room.name) : 0);
}

/** Member names in join order (this hub's first, then other hubs'), at most `limit` of them. */
export function namesIn(room: Room, others: Peers | undefined, limit = Infinity): string[] {
  const list: string[] = [];
  for (const member of room.members) {
    if (list.length >= limit) return list;
    list.push(member.name);
  }
  if (!others || others.size === 0) return list;
  return list.concat(others.names(room.name, limit - list.length));
}

export function withRef<E extends ServerEvent>(event: E, ref: Ref | undefined): E {
  return ref === undefined ? event : { ...event, ref };
}

/** Sends events to members, counting deliveries and bytes. */
export class Delivery {
  constructor(readonly metrics: Metrics) {}

  /**
   * Sends an event to everyone in a room but `skip`, encoding it at most once per view. The turn's
   * first broadcast goes to each member, and those whose connections can follow the room's
   * broadcast do (see {@link RoomTurn}): the turn's next broadcasts are queued once per view for
   * them, and one by one only for the others, so that a busy room's message costs the same
   * whatever the number of members.
   */
  toRoom(room: Room, event: ServerEvent, skip?: Member, id?: number): void {
    const turn = room.turn;
    if (turn !== undefined) {
      if (
        turn.version === room.version && (id === undefined || id > turn.floor) &&
        turn.lanes.every((lane) => lane.cast.live)
      ) return this.#toFollowers(turn, room, event, skip, id);
      // Its members changed, or the turn ended: its followers keep what they have.
      for (const lane of turn.lanes) lane.cast.freeze();
      room.turn = undefined;
    }
    // Two views: the last one used and its frame, and the other one's, encoded on first need.
    let view: View | undefined;
    let frame: Frame | null = null;
    let otherView: View | undefined;
    let otherFrame: Frame | null = null;
    const lanes: { view: View; cast: Follow }[] = [];
    const others: Member[] = [];
    const next = { version: room.version, floor: 0, lanes, others };
    for (const member of room.members) {
      if (member === skip) {
        others.push(member);
        continue;
      }
      if (member.view !== view) {
        if (member.view === otherView) {
          [view, frame, otherView, otherFrame] = [otherView, otherFrame, view, frame];
        } else {
          [otherView, otherFrame] = [view, frame];
          view = member.view;
          frame = frameOf(view.encode(event));
        }
      }
      if (!frame || !this.frame(member, frame, id, room, event)) {
        others.push(member);
        continue;
      }
      const cast = member.conn.follow?.(room);
      const lane = cast && lanes.find((lane) => lane.cast === cast);
      if (cast === undefined) {
        others.push(member);
        continue;
      }
      if (lane !== undefined && lane.view !== member.view) {
        member.conn.unfollow?.(); // one cast per view (a view is one format's lane): never met
        others.push(member);
        continue;
      }
      if (lane === undefined) lanes.push({ view: member.view, cast });
      member.follows = next;
      if (member.floor > next.floor) next.floor = member.floor;
    }
    if (lanes.length > 0) room.turn = next;
  }

  /** The rest of a turn's broadcasts: once per view for the followers, one by one for the others. */
  #toFollowers(turn: RoomTurn, room: Room, event: ServerEvent, skip?: Member, id?: number): void {
    if (skip !== undefined && skip.follows === turn) {
      // The author follows: it leaves the room's broadcast and gets the next ones one by one.
      skip.conn.unfollow?.();
      skip.follows = undefined;
      turn.others.push(skip);
    }
    const metrics = this.metrics;
    for (const lane of turn.lanes) {
      const frame = frameOf(lane.view.encode(event));
      if (!frame) continue;
      const sent = lane.cast.send(frame.data, frame.bytes);
      metrics.deliveries += sent;
      metrics.bytesOut += sent * frame.bytes;
    }
    let view: View | undefined;
    let frame: Frame | null = null;
    for (const member of turn.others) {
      if (member === skip) continue;
      if (member.view !== view) frame = frameOf((view = member.view).encode(event));
      if (frame) this.frame(member, frame, id, room, event);
    }
  }

  /** Sends an event to one member. */
  /**
   * Sends an event to one member. `about`: the room whose state it tells (not an answer to the
   * member): held for a welcome, it does not outlive a new one, which tells that state itself.
   */
  to(member: Member, event: ServerEvent, id?: number, about?: Room): void {
    const frame = frameOf(member.view.encode(event));
    if (!frame) return;
    if (!member.pending) return void this.frame(member, frame, id);
    member.pending.push({ frame, id, room: undefined, keep: about === undefined, lasting: false });
  }

  /**
   * Sends a frame, unless it is a message the member's welcome already carried. `room`: the room
   * it is broadcast to (see {@link Connection.send}), and `event` the broadcast; a frame held for
   * a welcome goes alone. Whether it went to the connection (not held, not dropped).
   */
  frame(member: Member, frame: Frame, id?: number, room?: Room, event?: ServerEvent): boolean {
    if (member.pending) {
      const keep = room === undefined;
      member.pending.push({ frame, id, room, keep, lasting: !keep && !!event && lasting(event) });
      return false;
    }
    if (!member.conn.open || (id !== undefined && id <= member.floor)) return false;
    const metrics = this.metrics;
    metrics.deliveries++;
    metrics.bytesOut += frame.bytes;
    try {
      member.conn.send(frame.data, frame.bytes, room);
      return true;
    } catch {
      member.conn.close(CloseCode.internalError, "send failed");
      return false;
    }
  }
}

/** What a hub's rooms tell the layers below when one opens or closes. */
export interface RoomsHost {
  /** Who is in which room on other hubs. */
  readonly others: Peers;
  /** The room has its first member here. */
  opened(name: string): void;
  /** Its last member here left. */
  closed(room: Room): void;
}

/** A hub's rooms: one per name while it has members here, made on the first join. */
export class Rooms {
  readonly #rooms = new Map<string, Room>();

  constructor(readonly host: RoomsHost) {}

  get size(): number {
    return this.#rooms.size;
  }

  get(name: string): Room | undefined {
    return this.#rooms.get(name);
  }

  /** Whether `room` is still the hub's (its last member may have left meanwhile). */
  current(room: Room): boolean {
    return this.#rooms.get(room.name) === room;
  }

  values(): IterableIterator<Room> {
    return this.#rooms.values();
  }

  /** The room named, made if it has no member here yet. */
  open(name: string): Room {
    let room = this.#rooms.get(name);
    if (!room) {
      const others = this.host.others;
      const names = new RoomNames<Member>((key) => others.has(name, key));
      room = { name, members: new Set(), names, version: 0 };
      this.#rooms.set(name, room);
      this.host.opened(name);
    }
    return room;
  }

  /** Takes a member out of its room (the room goes with its last member); false if not in it. */
  leave(member: Member): boolean {
    const room = member.room;
    if (!room.members.delete(member)) return false;
    room.version++;
    room.names.remove(member);
    if (room.members.size === 0) {
      this.#rooms.delete(room.name);
      this.host.closed(room);
    }
    return true;
  }

  /** Rooms with members here or on other hubs, the busiest first (at most 100). */
  list(): { room: string; members: number }[] {
    const counts = this.host.others.rooms();
    for (const room of this.#rooms.values()) {
      counts.set(room.name, (counts.get(room.name) ?? 0) + room.members.size);
    }
    return [...counts]
      .map(([room, members]) => ({ room, members }))
      .sort((a, b) => b.members - a.members || a.room.localeCompare(b.room))
      .slice(0, 100);
  }

  /** Each room's members' names here, for another hub's snapshot. */
  snapshot(): Record<string, string[]> {
    const rooms: Record<string, string[]> = {};
    for (const room of this.#rooms.values()) rooms[room.name] = namesIn(room, undefined);
    return rooms;
  }
}
