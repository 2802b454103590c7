/**
 * The chat hub: rooms, members and their commands. It never touches a socket (it talks to
 * {@link Connection}s, so tests drive it with fakes and any transport fits). What happens in a
 * room, on this hub or another, reaches it through the feed (lib/cluster/feed.ts) as room events
 * (a stored message as its envelope, in order), and what it does leaves through the feed.
 */

import type { Logger } from "../base/log.ts";
import { Metrics } from "../base/metrics.ts";
import {
  DEFAULT_ROOM,
  HISTORY_ON_JOIN,
  REPLY_BURST_BYTES,
  REPLY_BYTES_PER_SECOND,
  TEXT_HISTORY_PAGE,
  TYPING_INTERVAL_MS,
} from "../base/defaults.ts";
import { type Broker, LocalBroker } from "../cluster/broker.ts";
import { Feed } from "../cluster/feed.ts";
import type { MessageEnvelope } from "../cluster/order.ts";
import { HELP } from "../protocol/encode.ts";
import { CloseCode, parse, type ProtocolError, type Ref } from "../protocol/protocol.ts";
import { VIEWS } from "../protocol/views.ts";
import type { Draft, HistoryStore } from "../store/history.ts";
import { MemoryStore } from "../store/memory.ts";
import { asAck } from "./replies.ts";
import { HistoryDesk } from "./desk.ts";
import { Community } from "./community.ts";
import { Credentials, type Verify } from "./credentials.ts";
import { checkJoin, type JoinRequest, roomAllowed } from "./join.ts";
import { GRACE_MS, Lingering, sessionOf } from "./linger.ts";
import { Naming } from "./naming.ts";
import { BIG_ROOM, RoomPresence } from "./presence.ts";
import { type Connection, Delivery, type Member, namesIn, Rooms, withRef } from "./room.ts";
import {
  ackPassed,
  callSender,
  deliverStored,
  memberSender,
  type Published,
  type Sender,
} from "./sending.ts";
import { Welcomer } from "./welcome.ts";

/** Hub settings; every field optional. */
export interface HubOptions {
  /** The clock, injectable for tests. Milliseconds since the epoch. */
  now?: () => number;
  /** Sent in the welcome, e.g. "natter/0.1.0". */
  server?: string;
  /** Room for connections that ask for none. */
  defaultRoom?: string;
  /** Cap on one incoming frame, in UTF-8 bytes. */
  maxMessageBytes?: number;
  /** Where deliveries are counted. */
  metrics?: Metrics;
  /** Where messages are kept; an in-memory store by default. */
  store?: HistoryStore;
  /** Messages a JSON client gets with its welcome. */
  historyOnJoin?: number;
  /** A member's `typing` is passed on at most this often, in milliseconds. */
  typingIntervalMs?: number;
  /** Rooms with more members than this get presence summaries, not a notice per join. */
  bigRoom?: number;
  /**
   * Runs a presence summary later; by default after `presenceInterval` for the room's size
   * (`members()`, read again when that time comes: a room that grew meanwhile waits longer).
   */
  deferPresence?: (flush: () => void, members: () => number) => void;
  /** Carries events to every hub, this one included; in-process by default. */
  broker?: Broker;
  /** How often a hub with a shared broker says it is alive; lib/cluster/cluster.ts has the default. */
  heartbeatMs?: number;
  /** A hub not heard from for this long is gone, and its members with it. */
  peerTtlMs?: number;
  /** How long a message waits for an earlier one still in flight before the store fills the gap. */
  gapMs?: number;
  /**
   * Bytes of history (replies to `history`, and what welcomes carry) one connection may get at
   * once, and per second after that (defaults in lib/base/defaults.ts).
   */
  replyBurstBytes?: number;
  replyBytesPerSecond?: number;
  /** How long a page's member stays after its socket went away without a goodbye. */
  graceMs?: number;
  /** Checks a renewed signed token; absent where the server verifies none. */
  verify?: Verify;
  /** Where moderators' actions are logged. */
  log?: Logger;
}

/** Rooms of members, and the rules for who hears what. */
export class Hub {
  readonly #rooms: Rooms;
  readonly #members = new Map<Connection, Member>();
  /** The same members by connection id: room events name their actor by id. */
  readonly #byId = new Map<string, Member>();
  readonly #now: () => number;
  readonly #defaultRoom: string;
  readonly #maxMessageBytes: number | undefined;
  readonly #store: HistoryStore;
  readonly #typingIntervalMs: number;
  /** Who came and went, told to each room (lib/chat/presence.ts). */
  readonly #presence: RoomPresence;
  /** Everything that happens in a room, here or on other hubs (lib/cluster/feed.ts). */
  readonly #feed: Feed;
  readonly #send: Delivery;
  /** History replies, within each connection's allowance. */
  readonly #desk: HistoryDesk;
  readonly #welcomer: Welcomer;
  /** Members whose page went away, kept for the reload grace. */
  readonly #lingering: Lingering;
  /** Name changes: `/nick`, names given back, names yielded to another hub. */
  readonly #naming: Naming;
  /** The send contract: every message gets one answer (lib/chat/sending.ts). */
  readonly #sender: Sender<Member>;
  /** Verified members' token expiries and renewals. */
  readonly #credentials: Credentials;
  /** Moderation, topics and private messages (lib/chat/community.ts). */
  readonly #community: Community;
  /** Publishes for the server API, under the same contract as members' messages. */
  readonly #publish: (room: string, draft: Draft) => Promise<Published>;

  constructor(options: HubOptions = {}) {
    const now = this.#now = options.now ?? Date.now;
    this.#defaultRoom = options.defaultRoom ?? DEFAULT_ROOM;
    this.#maxMessageBytes = options.maxMessageBytes;
    const store = this.#store = options.store ?? new MemoryStore();
    this.#typingIntervalMs = options.typingIntervalMs ?? TYPING_INTERVAL_MS;
    const bigRoom = options.bigRoom ?? BIG_ROOM;
    this.#send = new Delivery(options.metrics ?? new Metrics());
    const { heartbeatMs, peerTtlMs, gapMs } = options;
    const feed = this.#feed = new Feed(options.broker ?? new LocalBroker(), store, {
      message: (room, envelope) => this.#message(room, envelope),
      passed: (room, envelope) => {
        const here = this.#rooms.get(room);
        if (here) ackPassed(this.#send, here, envelope);
      },
      joined: (room, name, actor, ts) => this.#joined(room, name, actor, ts),
      left: (room, name, ts) => this.#left(room, name, ts),
      renamed: (room, from, to, actor, ts) => this.#renamed(room, from, to, actor, ts),
      typing: (room, name, actor, ts) => {
        const here = this.#rooms.get(room);
        const event = { type: "typing", room, name, ts } as const;
        if (here) this.#send.toRoom(here, event, this.#byId.get(actor ?? ""));
      },
      clash: (room, name) => {
        const here = this.#rooms.get(room);
        if (here) this.#naming.yieldName(here, name);
      },
      community: (envelope, own) => this.#community.received(envelope, own),
      rebased: () => this.#rebased(),
      snapshot: () => this.#rooms.snapshot(),
    }, { now, heartbeatMs, peerTtlMs, gapMs });
    this.#naming = new Naming(feed, this.#send, now);
    this.#credentials = new Credentials(options.verify, this.#send, now);
    this.#community = new Community({
      store,
      feed,
      send: this.#send,
      now,
      room: (name) => this.#rooms.get(name),
      member: (id) => this.#byId.get(id),
      everyone: () => this.#members.values(),
      changed: () => this.#desk.forget(),
      log: options.log,
    });
    this.#lingering = new Lingering(options.graceMs ?? GRACE_MS);
    this.#rooms = new Rooms({
      others: feed.view,
      opened: (name) => {
        store.hold?.(name);
        feed.open(name);
      },
      closed: (room) => {
        // Authors who moved on while their messages were being stored still learn they were
        // kept (the event names its room): the room's order, which would have told them, stops.
        for (const waiting of room.acks?.takeAll() ?? []) {
          if (waiting.member.view.acks) {
            this.#send.to(waiting.member, asAck(waiting.message, waiting.ref));
          }
        }
        store.release?.(room.name);
        feed.close(room.name);
      },
    });
    this.#presence = new RoomPresence(this.#send, feed.view, {
      bigRoom,
      now,
      defer: options.deferPresence,
      current: (room) => this.#rooms.current(room),
    });
    const present = (member: Member, room: string) =>
      this.#members.get(member.conn) === member && member.room.name === room;
    this.#sender = memberSender(store, feed, this.#send, present, (n) => this.#rooms.get(n));
    this.#publish = callSender(store, feed);
    this.#desk = new HistoryDesk(store, {
      historyOnJoin: options.historyOnJoin ?? HISTORY_ON_JOIN,
      defaultPage: { text: TEXT_HISTORY_PAGE, json: HISTORY_ON_JOIN },
      replyBurstBytes: options.replyBurstBytes ?? REPLY_BURST_BYTES,
      replyBytesPerSecond: options.replyBytesPerSecond ?? REPLY_BYTES_PER_SECOND,
    });
    const server = options.server ?? "natter";
    this.#welcomer = new Welcomer(this.#desk, feed, this.#send, {
      server,
      bigRoom,
      topic: (room) => this.#community.topicOf(room),
    });
  }

  /** Number of connections in the hub. */
  get connections(): number {
    return this.#members.size;
  }

  /** Number of rooms with at least one member here. */
  get rooms(): number {
    return this.#rooms.size;
  }

  /** Other hubs this one hears from (workers or instances). */
  get peers(): number {
    return this.#feed.view.size;
  }

  /** The broker this hub publishes through. */
  get broker(): Broker {
    return this.#feed.broker;
  }

  /**
   * Adds a connection: it gets a welcome, its room a `joined`. A bad requested name or room
   * is replaced by the default and explained with an error event; the connection stays.
   */
  connect(conn: Connection, request: JoinRequest = {}): void {
    if (this.#members.has(conn)) return;
    const fallbackName = `guest-${request.port ?? conn.id}`;
    const asked = checkJoin(request, this.#defaultRoom, fallbackName, this.#store.epoch);
    const session = sessionOf(request.session);
    const back = this.#lingering.take(session, asked.room);
    // A session is not a credential: only the same person (the same verified user, or a guest
    // again where guests are marked) takes a lingering member back, and not past a ban.
    const same = back !== undefined && back.view === VIEWS[conn.format] &&
      back.identity?.sub === request.identity?.sub &&
      (back.guest ?? false) === (request.guest ?? false);
    const banned = this.#community.banned(back?.name ?? asked.name, conn.address);
    if (back && same && !banned) {
      // Its page came back within the grace: the same member, no notices, what it missed.
      back.conn = conn;
      back.room.version++; // its room's broadcasts reach it on the new connection
      back.identity = request.identity;
      this.#members.set(conn, back);
      this.#byId.set(conn.id, back);
      this.#credentials.watch(back);
      this.#welcomer.welcome(back, asked.since);
      return;
    }
    if (back) this.#exit(back);
    const ban = banned ?? this.#community.banned(asked.name, conn.address);
    if (ban) {
      const text = `you are banned${ban.until ? " for now" : ""}${
        ban.reason ? `: ${ban.reason}` : ""
      }`;
      return conn.close(CloseCode.removed, text.slice(0, 120));
    }
    const member: Member = {
      session,
      conn,
      view: VIEWS[conn.format],
      name: asked.name,
      wanted: asked.name,
      room: this.#rooms.open(asked.room),
      typedAt: -Infinity,
      floor: 0,
      pending: undefined,
      identity: request.identity,
      ...(request.guest ? { guest: true } : {}),
    };
    this.#credentials.watch(member);
    this.#members.set(conn, member);
    this.#byId.set(conn.id, member);
    this.#enter(member, asked.name, asked.since);
    for (const error of asked.errors) this.#send.to(member, { type: "error", ...error });
  }

  /**
   * Removes a connection (after it closed); its room gets a `left`. Unknown ones are ignored.
   * `linger`: it went away without a goodbye (a reload, a lost network); a page's member then
   * stays for the grace (lib/chat/linger.ts), in case its page comes back.
   */
  disconnect(conn: Connection, linger = false): void {
    const member = this.#members.get(conn);
    if (!member) return;
    this.#members.delete(conn);
    this.#byId.delete(conn.id);
    this.#credentials.forget(member);
    if (linger && member.session !== undefined) {
      member.pending = undefined;
      this.#lingering.hold(member.session, member, () => this.#exit(member));
    } else this.#exit(member);
  }

  /** Handles one text frame from a connection. */
  receive(conn: Connection, data: string): void {
    const member = this.#members.get(conn);
    if (!member) return;
    const parsed = parse(conn.format, data, this.#maxMessageBytes);
    if (!parsed.ok) return this.#send.to(member, { type: "error", ...parsed.error });
    const msg = parsed.msg;
    const room = member.room;
    switch (msg.type) {
      case "say":
      case "me": {
        if (this.#community.silenced(member, msg.ref)) return;
        const action = msg.type === "me" ? { action: true as const } : {};
        const draft = { ts: this.#now(), from: member.name, text: msg.text, ...action };
        return this.#sender.say(member, room.name, draft, msg.ref, msg.key);
      }
      case "nick":
        if (this.#community.silenced(member, msg.ref)) return;
        if (this.#community.bannedName(member, msg.name, msg.ref)) return;
        return this.#naming.rename(member, msg.name, msg.ref);
      case "moderate":
      case "topic":
      case "msg":
      case "delete":
        return this.#community.handle(member, msg);
      case "join":
        return this.#move(member, msg.room, msg.ref);
      case "who": {
        const members = namesIn(room, this.#feed.view);
        return this.#send.to(
          member,
          withRef({ type: "members", room: room.name, members }, msg.ref),
        );
      }
      case "history": {
        const query = { limit: msg.limit, before: msg.before, ref: msg.ref };
        const error = (error: ProtocolError) => this.#send.to(member, { type: "error", ...error });
        return this.#desk.page(member, room.name, query, (f) => this.#send.frame(member, f), error);
      }
      case "rooms":
        return this.#send.to(member, withRef({ type: "rooms", rooms: this.roomList() }, msg.ref));
      case "typing":
        return this.#typing(member);
      case "token":
        return void this.#credentials.renew(member, msg.token, msg.ref).catch((error) =>
          this.#send.to(member, {
            type: "error",
            code: "bad_token",
            message: `token not renewed: ${(error as Error).message}`,
            ...(msg.ref === undefined ? {} : { ref: msg.ref }),
          })
        );
      case "help":
        return this.#send.to(member, { type: "notice", text: HELP });
      case "quit":
        // A line first, so a REPL shows that /quit did something; then the close.
        this.#send.to(member, { type: "notice", text: member.view.notice("bye") });
        return conn.close(CloseCode.normal, "bye");
    }
  }

  /** Refuses a frame the transport could not hand over as text (e.g. a binary frame). */
  reject(conn: Connection, error: ProtocolError): void {
    const member = this.#members.get(conn);
    if (member) this.#send.to(member, { type: "error", ...error });
  }

  /** Sends a server notice to every connection, e.g. that the server is going away. */
  announce(text: string): void {
    for (const member of this.#members.values()) {
      this.#send.to(member, { type: "notice", text: member.view.notice(text) });
    }
  }

  // --- For backends (the server API, lib/transport/api.ts) ---

  /** Stores and delivers a message from a backend, as `name`; its id, or why not. */
  publish(room: string, name: string, text: string): Promise<Published> {
    return this.#publish(room, { ts: this.#now(), from: name, text });
  }

  /** Names in a room, here and on other hubs. */
  membersOf(roomName: string): string[] {
    const room = this.#rooms.get(roomName);
    const here = room ? namesIn(room, undefined) : [];
    return here.concat(this.#feed.view.size > 0 ? this.#feed.view.names(roomName) : []);
  }

  /** Closes (4004) every member with this user id or name, on every hub. */
  disconnectEverywhere(who: { sub?: string; name?: string }, by: string): void {
    this.#community.removeEverywhere(who, by);
  }

  /** Deletes a kept message as `by`; false when there is no such message. */
  deleteMessage(room: string, id: number, by: string): Promise<boolean> {
    return this.#community.deleteAs(room, id, by);
  }

  /** Whether a client address is banned: its upgrade is refused (lib/transport/gate.ts). */
  bannedAddress(address: string): boolean {
    return this.#community.banned(undefined, address) !== undefined;
  }

  /** Rooms with members here or on other hubs, the busiest first (at most 100). */
  roomList(): { room: string; members: number }[] {
    return this.#rooms.list();
  }

  /** Closes every connection with the given code (e.g. 1001 at shutdown). */
  closeAll(code: number, reason: string): void {
    this.#presence.stop();
    this.#lingering.stop();
    this.#credentials.stop();
    this.#feed.clearTimers();
    for (const conn of [...this.#members.keys()]) conn.close(code, reason);
  }

  /**
   * Stops the hub's timers and tells the other hubs it is leaving, so its members leave
   * their view now rather than when its heartbeats are missed.
   */
  stop(): void {
    this.#presence.stop();
    this.#lingering.stop();
    this.#credentials.stop();
    this.#feed.stop();
  }

  /**
   * The store started a new id space (it lost its data): welcome JSON members again, so their
   * clients learn the new epoch and drop the old ids.
   */
  #rebased(): void {
    const epoch = this.#store.epoch;
    for (const room of this.#rooms.values()) {
      // Messages stored under the old epoch and not yet delivered here never will be (their ids
      // mean nothing now): their authors cannot be told they were kept, nor that they were not.
      // A resend with the same key is stored once under the new epoch.
      const acks = room.acks;
      for (const waiting of acks?.takeAll() ?? []) {
        if (waiting.epoch === epoch) acks!.set(waiting.message.id, waiting);
        else if (waiting.member.view.acks) {
          const message = "not sure your message was kept: the store lost its data meanwhile; " +
            "a resend with the same key will not show twice";
          this.#send.to(waiting.member, withRef({ type: "unknown", message }, waiting.ref));
        }
      }
      for (const member of room.members) {
        member.floor = 0;
        if (member.view.replays) this.#welcomer.welcome(member, undefined);
      }
    }
  }

  #move(member: Member, roomName: string, ref: Ref | undefined): void {
    if (member.room.name === roomName) {
      // Nothing to do, and nothing worth resending: a welcome carries the room's history.
      const text = member.view.notice(`already in #${roomName}`);
      return this.#send.to(member, withRef({ type: "notice", text }, ref));
    }
    if (!roomAllowed(member.identity, roomName)) {
      const message = `your token does not allow #${roomName}`;
      return this.#send.to(member, withRef({ type: "error", code: "forbidden", message }, ref));
    }
    this.#exit(member);
    member.room = this.#rooms.open(roomName);
    this.#enter(member, member.wanted, undefined, { ref });
  }

  /**
   * Puts a member into its room under a free variant of `base`, welcomes it, tells the room.
   * `join`: the request it answers, if it came with one.
   */
  #enter(member: Member, base: string, since: number | undefined, join?: { ref: Ref | undefined }) {
    const room = member.room;
    // A verified user's name is its own: whoever holds it here under another identity (a
    // `nick`-allowed user who took it) moves to a free variant.
    const holder = member.identity ? room.names.holder(member.identity.name) : undefined;
    if (holder && holder.identity?.sub !== member.identity!.sub) {
      // It no longer waits for that name either, or it would take it back at once.
      holder.wanted = room.names.free(holder.wanted);
      this.#naming.yieldName(room, member.identity!.name);
    }
    member.name = room.names.free(base);
    room.members.add(member);
    room.version++;
    room.names.add(member);
    // Membership starts now; the welcome (with its history) goes first, and live events that
    // arrive meanwhile wait, so nothing falls between what the history holds and what is live.
    this.#welcomer.welcome(member, since, join);
    this.#feed.joined(room.name, member.name, member.conn.id);
  }

  /** Passes `typing` on to the room's other JSON members, at most once per interval. */
  #typing(member: Member): void {
    const now = this.#now();
    if (now - member.typedAt < this.#typingIntervalMs) return;
    member.typedAt = now;
    this.#feed.typing(member.room.name, member.name, member.conn.id, now);
  }

  #exit(member: Member): void {
    if (this.#rooms.leave(member)) this.#feed.left(member.room.name, member.name);
  }

  // --- Room events (lib/cluster/feed.ts): everything that happens reaches members through here. ---

  #joined(roomName: string, name: string, actor: string | undefined, ts: number): void {
    const room = this.#rooms.get(roomName);
    if (room) this.#presence.joined(room, name, this.#byId.get(actor ?? ""), ts);
  }

  #left(roomName: string, name: string, ts: number): void {
    const room = this.#rooms.get(roomName);
    if (!room) return;
    this.#presence.left(room, name, ts);
    this.#naming.freed(room, name);
  }

  #renamed(roomName: string, from: string, to: string, actor: string | undefined, ts: number) {
    const room = this.#rooms.get(roomName);
    if (!room) return;
    const member = actor === undefined ? undefined : this.#byId.get(actor);
    this.#send.toRoom(room, { type: "renamed", room: room.name, from, to, ts }, member);
    this.#naming.freed(room, from);
  }

  /** A stored message, in order: to everyone in its room, and its acknowledgement to its author. */
  #message(roomName: string, envelope: MessageEnvelope): void {
    const room = this.#rooms.get(roomName);
    if (!room) return;
    const own = envelope.origin === this.#feed.origin;
    deliverStored(
      this.#send,
      room,
      envelope,
      own ? this.#byId.get(envelope.actor ?? "") : undefined,
    );
  }
}
