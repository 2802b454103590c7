/**
 * The chat hub: rooms, members, names, and who hears what. It never touches a socket;
 * it talks to {@link Connection}s, so tests drive it with fakes and any transport fits.
 */

import { DEFAULT_ROOM, HISTORY_ON_JOIN, TEXT_HISTORY_PAGE } from "./defaults.ts";
import { type Broker, type Envelope, LocalBroker } from "./broker.ts";
import { Cluster } from "./cluster.ts";
import { HistoryDesk } from "./desk.ts";
import { HELP } from "./encode.ts";
import { type HistoryStore, when } from "./history.ts";
import type { TokenBucket } from "./limits.ts";
import { MemoryStore } from "./memory.ts";
import { Metrics } from "./metrics.ts";
import { RoomNames } from "./names.ts";
import { type MessageEnvelope, RoomOrder } from "./order.ts";
import { Sender } from "./sending.ts";
import { type View, VIEWS } from "./views.ts";
import type { Change } from "./peers.ts";
import { BIG_ROOM, presenceInterval, type Round, summary } from "./presence.ts";
import {
  CloseCode,
  type Format,
  parse,
  type ProtocolError,
  type Ref,
  type ServerEvent,
} from "./protocol.ts";
import { asEvent, type Frame, frameOf, refField } from "./replies.ts";
import { checkName, checkRoom, NAME_RULE, quote, ROOM_RULE } from "./text.ts";

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
  close(code: number, reason: string): void;
}

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
   * Runs a presence summary later; by default after {@link presenceInterval} for the room's size
   * (`members()`, read again when that time comes: a room that grew meanwhile waits longer).
   */
  deferPresence?: (flush: () => void, members: () => number) => void;
  /** Carries events to every hub, this one included; in-process by default. */
  broker?: Broker;
  /** How often a hub with a shared broker says it is alive, in milliseconds. */
  heartbeatMs?: number;
  /** A hub not heard from for this long is gone, and its members with it. */
  peerTtlMs?: number;
  /** How long a message waits for an earlier one still in flight before the store fills the gap. */
  gapMs?: number;
  /**
   * Bytes of history (replies to `history`, and what welcomes carry) one connection may get at
   * once, and per second after that; defaults {@link REPLY_BURST_BYTES}, {@link REPLY_BYTES_PER_SECOND}.
   */
  replyBurstBytes?: number;
  replyBytesPerSecond?: number;
}

/**
 * A connection's history allowance: a page of history is a cheap request for the client and
 * hundreds of KiB for the server to send, so past 1 MiB at once a connection gets 256 KiB a second
 * (a few pages of ordinary chat; a welcome then carries less, and a `history` request is refused
 * with `rate_limited` until the debt is paid).
 */
export const REPLY_BURST_BYTES = 1024 * 1024;
export const REPLY_BYTES_PER_SECOND = 256 * 1024;

/** Defaults for {@link HubOptions.heartbeatMs} and {@link HubOptions.peerTtlMs}. */
export { HEARTBEAT_MS, PEER_TTL_MS } from "./cluster.ts";
const GAP_MS = 200;

export { BIG_ROOM, PRESENCE_INTERVAL_MS, presenceInterval } from "./presence.ts";

/** What a new connection asks for: its query string, and its remote port for the default name. */
export interface JoinRequest {
  name?: string | null;
  room?: string | null;
  /** The last message id the client saw in the room (its `?since=`), to recover what it missed. */
  since?: number | string | null;
  /** The epoch the client's `since` belongs to (`?epoch=`); another one makes `since` meaningless here. */
  epoch?: string | null;
  port?: number;
}

/** Messages a JSON client gets with its welcome, unless told otherwise. */
export const DEFAULT_HISTORY_ON_JOIN = HISTORY_ON_JOIN;

interface Room {
  readonly name: string;
  /** Members in join order. */
  readonly members: Set<Member>;
  /** Who holds which name, and who waits for one (see lib/names.ts). */
  readonly names: RoomNames<Member>;
  /**
   * Joins (a local member, named as it is when the summary goes, or a name from another hub)
   * and leaves not yet told, in a room above the big-room size (see {@link BIG_ROOM}).
   */
  presence?: Round<Member> | undefined;
  /** Its messages in id order, each once (see lib/order.ts). */
  readonly order: RoomOrder;
  /** Authors here waiting for the acknowledgement of a stored message, by its id. */
  acks?: Map<number, { member: Member; ref: Ref | undefined }> | undefined;
}

/** An event for one member, kept until its welcome has gone out. */
interface Pending {
  readonly frame: Frame;
  readonly id: number | undefined;
}

interface Member {
  readonly conn: Connection;
  /** What its format receives (lib/views.ts). */
  readonly view: View;
  name: string;
  /** The name it asked for; `name` may carry a suffix where that one was taken. */
  wanted: string;
  /** Filed by its room's names while it waits for `wanted`. */
  waitingFor?: string | undefined;
  room: Room;
  /** When its last `typing` was passed on. */
  typedAt: number;
  /** Messages up to this id came with its welcome; live ones start after it. */
  floor: number;
  /** Events that arrived while its welcome was being read from the store. */
  pending: Pending[] | undefined;
  /** Its history allowance in bytes, made on its first reply that carries any. */
  replies?: TokenBucket | undefined;
}

/** Rooms of members, and the rules for who hears what. */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<Connection, Member>();
  /** The same members by connection id: envelopes name their actor by id. */
  readonly #byId = new Map<string, Member>();
  readonly #now: () => number;
  readonly #server: string;
  readonly #defaultRoom: string;
  readonly #maxMessageBytes: number | undefined;
  readonly #metrics: Metrics;
  readonly #store: HistoryStore;

  readonly #typingIntervalMs: number;
  readonly #bigRoom: number;
  readonly #deferPresence: (flush: () => void, members: () => number) => void;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #broker: Broker;
  readonly #origin: string;
  /** The other hubs: who is alive, and who is in which room there (see lib/cluster.ts). */
  readonly #cluster: Cluster;
  readonly #gapMs: number;
  /** History replies and what welcomes carry, within each connection's allowance. */
  readonly #desk: HistoryDesk;
  /** The send contract: every message gets one answer (lib/sending.ts). */
  readonly #sender: Sender<Member>;
  /** The store's id space this hub's rooms are ordered in. */
  #epoch: string;

  constructor(options: HubOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#server = options.server ?? "natter";
    this.#defaultRoom = options.defaultRoom ?? DEFAULT_ROOM;
    this.#maxMessageBytes = options.maxMessageBytes;
    this.#metrics = options.metrics ?? new Metrics();
    this.#store = options.store ?? new MemoryStore();
    this.#typingIntervalMs = options.typingIntervalMs ?? 2000;
    this.#bigRoom = options.bigRoom ?? BIG_ROOM;
    this.#deferPresence = options.deferPresence ?? ((flush, members) => {
      const start = performance.now();
      const due = () => {
        const left = start + presenceInterval(members()) - performance.now();
        if (left >= 1) this.#later(due, left);
        else flush();
      };
      due();
    });
    this.#epoch = this.#store.epoch;
    this.#broker = options.broker ?? new LocalBroker();
    this.#origin = this.#broker.origin;
    this.#cluster = new Cluster(this.#broker, {
      snapshot: () => {
        const rooms: Record<string, string[]> = {};
        for (const room of this.#rooms.values()) rooms[room.name] = names(room);
        return rooms;
      },
      joined: (change, origin, ts) => {
        this.#toldJoined(change, ts);
        this.#resolveClash(change.room, change.name, origin);
      },
      left: (change, ts) => this.#toldLeftChange(change, ts),
    }, { now: this.#now, heartbeatMs: options.heartbeatMs, peerTtlMs: options.peerTtlMs });
    this.#gapMs = options.gapMs ?? GAP_MS;
    this.#sender = new Sender<Member>({
      store: this.#store,
      origin: this.#broker.origin,
      idOf: (member) => member.conn.id,
      present: (member, room) =>
        this.#members.get(member.conn) === member && member.room.name === room,
      rebaseIfNeeded: () => {
        if (this.#store.epoch !== this.#epoch) this.#rebase();
      },
      delivered: (room, id) => this.#rooms.get(room)?.order.delivered(id) ?? false,
      awaitAck: (room, id, member, ref) => {
        const here = this.#rooms.get(room);
        if (here) (here.acks ??= new Map()).set(id, { member, ref });
      },
      publish: (envelope) => this.#publish(envelope),
      tell: (member, event) => this.#sendTo(member, event),
      acks: (member) => member.view.acks,
    });
    this.#desk = new HistoryDesk(this.#store, {
      historyOnJoin: options.historyOnJoin ?? DEFAULT_HISTORY_ON_JOIN,
      defaultPage: { text: TEXT_HISTORY_PAGE, json: DEFAULT_HISTORY_ON_JOIN },
      replyBurstBytes: options.replyBurstBytes ?? REPLY_BURST_BYTES,
      replyBytesPerSecond: options.replyBytesPerSecond ?? REPLY_BYTES_PER_SECOND,
    });
    this.#broker.subscribe(
      (envelope) => this.#receiveEnvelope(envelope),
      (status) => {
        if (!status.up) return;
        // Back from an outage: others may have missed our changes and we theirs, the store
        // may have lost its data (a new epoch: ids start again),
        this.#cluster.hello();
        // and messages may have been lost in transit meanwhile.
        when(() => this.#store.refresh?.(), () => {
          if (this.#store.epoch !== this.#epoch) this.#rebase();
          else for (const room of this.#rooms.values()) room.order.catchUp();
        }, () => {});
      },
    );
    this.#cluster.start();
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
    return this.#cluster.view.size;
  }

  /** The broker this hub publishes through. */
  get broker(): Broker {
    return this.#broker;
  }

  /**
   * Adds a connection: it gets a welcome, its room a `joined`. A bad requested name or room
   * is replaced by the default and explained with an error event; the connection stays.
   */
  connect(conn: Connection, request: JoinRequest = {}): void {
    if (this.#members.has(conn)) return;
    const errors: ProtocolError[] = [];
    let roomName = this.#defaultRoom;
    if (request.room) {
      const room = checkRoom(request.room);
      if (room) roomName = room;
      else {errors.push({
          code: "bad_room",
          message: `room ${
            quote(request.room)
          } is not allowed: use ${ROOM_RULE}; you are in #${roomName}`,
        });}
    }
    let base = `guest-${request.port ?? conn.id}`;
    if (request.name) {
      const name = checkName(request.name);
      if (name) base = name;
      else {errors.push({
          code: "bad_name",
          message: `name ${quote(request.name)} is not allowed: use ${NAME_RULE}`,
        });}
    }
    const member: Member = {
      conn,
      view: VIEWS[conn.format],
      name: base,
      wanted: base,
      room: this.#room(roomName),
      typedAt: -Infinity,
      floor: 0,
      pending: undefined,
    };
    this.#members.set(conn, member);
    this.#byId.set(conn.id, member);
    const foreign = request.epoch != null && request.epoch !== this.#store.epoch;
    let since = request.since == null || request.since === "" ? undefined : Number(request.since);
    if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) {
      errors.push({
        code: "bad_message",
        message: `since must be a message id (0 or more), got ${quote(String(request.since))}`,
      });
      since = undefined;
    }
    // An id from another id space recovers nothing; -1 makes the store say so.
    if (since !== undefined && foreign) since = -1;
    this.#enter(member, base, undefined, since);
    for (const error of errors) this.#sendTo(member, { type: "error", ...error });
  }

  /** Removes a connection (after it closed); its room gets a `left`. Unknown ones are ignored. */
  disconnect(conn: Connection): void {
    const member = this.#members.get(conn);
    if (!member) return;
    this.#members.delete(conn);
    this.#byId.delete(conn.id);
    this.#exit(member);
  }

  /** Handles one text frame from a connection. */
  receive(conn: Connection, data: string): void {
    const member = this.#members.get(conn);
    if (!member) return;
    const parsed = parse(conn.format, data, this.#maxMessageBytes);
    if (!parsed.ok) return this.#sendTo(member, { type: "error", ...parsed.error });
    const msg = parsed.msg;
    switch (msg.type) {
      case "say":
      case "me":
        return this.#say(member, msg.text, msg.type === "me", msg.ref, msg.key);
      case "nick":
        return this.#rename(member, msg.name, msg.ref);
      case "join":
        return this.#move(member, msg.room, msg.ref);
      case "who":
        return this.#sendTo(
          member,
          withRef(
            { type: "members", room: member.room.name, members: this.#names(member.room) },
            msg.ref,
          ),
        );
      case "history":
        return this.#history(member, msg.limit, msg.before, msg.ref);
      case "rooms":
        return this.#sendTo(member, withRef({ type: "rooms", rooms: this.roomList() }, msg.ref));
      case "typing":
        return this.#typing(member);
      case "help":
        return this.#sendTo(member, { type: "notice", text: HELP });
      case "quit":
        return conn.close(CloseCode.normal, "bye");
    }
  }

  /** Refuses a frame the transport could not hand over as text (e.g. a binary frame). */
  reject(conn: Connection, error: ProtocolError): void {
    const member = this.#members.get(conn);
    if (member) this.#sendTo(member, { type: "error", ...error });
  }

  /** Sends a server notice to every connection, e.g. that the server is going away. */
  announce(text: string): void {
    for (const member of this.#members.values()) {
      this.#sendTo(member, {
        type: "notice",
        text: member.view.notice(text),
      });
    }
  }

  /** Rooms with members here or on other hubs, the busiest first (at most 100). */
  roomList(): { room: string; members: number }[] {
    const counts = this.#cluster.view.rooms();
    for (const room of this.#rooms.values()) {
      counts.set(room.name, (counts.get(room.name) ?? 0) + room.members.size);
    }
    return [...counts]
      .map(([room, members]) => ({ room, members }))
      .sort((a, b) => b.members - a.members || a.room.localeCompare(b.room))
      .slice(0, 100);
  }

  /** Closes every connection with the given code (e.g. 1001 at shutdown). */
  closeAll(code: number, reason: string): void {
    this.#clearTimers();
    for (const conn of [...this.#members.keys()]) conn.close(code, reason);
  }

  /**
   * Stops the hub's timers and tells the other hubs it is leaving, so its members leave
   * their view now rather than when its heartbeats are missed.
   */
  stop(): void {
    this.#clearTimers();
    this.#cluster.stop();
  }

  /**
   * The store started a new id space (it lost its data): forget where each room was, and
   * welcome JSON members again, so their clients learn the new epoch and drop the old ids.
   */
  #rebase(): void {
    this.#epoch = this.#store.epoch;
    for (const room of this.#rooms.values()) {
      room.order.reset();
      for (const member of room.members) {
        member.floor = 0;
        if (member.view.replays) this.#welcomeAndFlush(member, undefined, undefined);
      }
    }
  }

  #clearTimers(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    for (const room of this.#rooms.values()) room.order.timersCleared();
  }

  #cancel(timer: ReturnType<typeof setTimeout>): void {
    clearTimeout(timer);
    this.#timers.delete(timer);
  }

  #later(run: () => void, ms: number): ReturnType<typeof setTimeout> {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      run();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #publish(envelope: Envelope): void {
    this.#broker.publish(envelope);
  }

  /** A `say` or `me`: stored, published and answered by the send contract (lib/sending.ts). */
  #say(member: Member, text: string, action: boolean, ref: Ref | undefined, key?: string): void {
    const draft = {
      ts: this.#now(),
      from: member.name,
      text,
      ...(action ? { action: true as const } : {}),
    };
    this.#sender.say(member, member.room.name, draft, ref, key);
  }

  #history(member: Member, asked: number | undefined, before: number | undefined, ref?: Ref): void {
    this.#desk.page(
      member,
      member.room.name,
      { limit: asked, before, ref },
      (frame) => this.#deliver(member, frame),
      (error) => this.#sendTo(member, { type: "error", ...error }),
    );
  }

  #rename(member: Member, name: string, ref: Ref | undefined): void {
    const room = member.room;
    if (room.names.holder(name) !== member && room.names.taken(name)) {
      return this.#sendTo(member, {
        type: "error",
        code: "name_taken",
        message: `name ${quote(name)} is taken in #${room.name}`,
        ...refField(ref),
      });
    }
    member.wanted = name;
    this.#setName(member, name, ref);
  }

  /**
   * Gives a member another name and tells its room. Besides `/nick`: a member who got
   * `alice-2` because `alice` was taken gets `alice` back when it frees up, and of two members
   * who took one name on two hubs at once, one (on the hub with the greater origin tag) yields.
   */
  #setName(member: Member, name: string, ref?: Ref): void {
    const room = member.room;
    const from = member.name;
    const ts = this.#now();
    room.names.rename(member, name);
    if (from !== name) {
      this.#publish({
        kind: "renamed",
        ...this.#change(room),
        ts,
        from,
        to: name,
        actor: member.conn.id,
      });
    }
    this.#sendTo(member, withRef({ type: "renamed", room: room.name, from, to: name, ts }, ref));
  }

  #move(member: Member, roomName: string, ref: Ref | undefined): void {
    if (member.room.name === roomName) {
      // Nothing to do, and nothing worth resending: a welcome carries the room's history.
      const text = member.view.notice(`already in #${roomName}`);
      return this.#sendTo(member, withRef({ type: "notice", text }, ref));
    }
    this.#exit(member);
    member.room = this.#room(roomName);
    this.#enter(member, member.wanted, ref);
  }

  /** Puts a member into its room under a free variant of `base`, welcomes it, tells the room. */
  #enter(member: Member, base: string, ref?: Ref, since?: number): void {
    const room = member.room;
    member.name = room.names.free(base);
    room.members.add(member);
    room.names.add(member);
    // Membership starts now; the welcome (with its history) goes first, and live events that
    // arrive meanwhile wait, so nothing falls between what the history holds and what is live.
    this.#welcomeAndFlush(member, ref, since);
    this.#publish({
      kind: "joined",
      ...this.#change(room),
      name: member.name,
      actor: member.conn.id,
    });
  }

  /** The fields of a presence change from this hub: numbered, so others can see a gap. */
  #change(room: Room): { origin: string; room: string; seq: number; ts: number } {
    return {
      origin: this.#origin,
      room: room.name,
      seq: this.#cluster.nextSeq(),
      ts: this.#now(),
    };
  }

  /** Sends the welcome once the store has answered, then what arrived meanwhile. */
  #welcomeAndFlush(member: Member, ref: Ref | undefined, since: number | undefined): void {
    const room = member.room;
    member.pending ??= [];
    // Who is here as membership starts: changes after this reach the member as events.
    const listed = member.view.listed(this.#bigRoom);
    const present = { members: this.#names(room, listed), count: this.#count(room) };
    // A JSON welcome carries history: reserved from the member's allowance before the read.
    const desk = this.#desk;
    const reserved = member.view.replays && desk.reserve(member) === 0;
    const fields = () => ({ server: this.#server, name: member.name, room: room.name, ...present });
    when(
      () => desk.read(member, room.name, since, reserved),
      (found) => {
        if (!this.#members.has(member.conn) || member.room !== room) {
          if (reserved) desk.settle(member, 0);
          return;
        }
        room.order.startAt(found.head);
        member.floor = Math.max(found.head, found.messages.at(-1)?.id ?? 0);
        const pending = member.pending ?? [];
        member.pending = undefined;
        this.#deliver(member, desk.welcome(member, fields(), found, reserved, ref));
        for (const { frame, id } of pending) {
          if (id === undefined || id > member.floor) this.#deliver(member, frame, id);
        }
      },
      (error) => {
        // The store is unreachable: welcome without history; live events still flow.
        if (!this.#members.has(member.conn) || member.room !== room) {
          if (reserved) desk.settle(member, 0);
          return;
        }
        const pending = member.pending ?? [];
        member.pending = undefined;
        if (reserved) desk.settle(member, 0);
        this.#deliver(member, desk.welcome(member, fields(), { messages: [] }, false, ref));
        this.#sendTo(member, {
          type: "error",
          code: "unavailable",
          message: `history is not available right now (${(error as Error).message})`,
        });
        for (const { frame, id } of pending) this.#deliver(member, frame, id);
      },
    );
  }

  /** Passes `typing` on to the room's other JSON members, at most once per interval. */
  #typing(member: Member): void {
    const now = this.#now();
    if (now - member.typedAt < this.#typingIntervalMs) return;
    member.typedAt = now;
    this.#publish({
      kind: "typing",
      origin: this.#origin,
      room: member.room.name,
      name: member.name,
      ts: now,
      actor: member.conn.id,
    });
  }

  #exit(member: Member): void {
    const room = member.room;
    if (!room.members.delete(member)) return;
    room.names.remove(member);
    member.pending = undefined;
    if (room.members.size === 0) {
      this.#rooms.delete(room.name);
      this.#store.release?.(room.name);
      room.order.stop();
    }
    this.#publish({ kind: "left", ...this.#change(room), name: member.name });
  }

  #room(name: string): Room {
    let room = this.#rooms.get(name);
    if (!room) {
      const host = {
        store: this.#store,
        deliver: (envelope: MessageEnvelope) => this.#deliverMessage(room!, envelope),
        later: (run: () => void, ms: number) => this.#later(run, ms),
        cancel: (timer: unknown) => this.#cancel(timer as ReturnType<typeof setTimeout>),
        gapMs: this.#gapMs,
      };
      room = {
        name,
        members: new Set(),
        names: new RoomNames<Member>((key) => this.#cluster.view.has(name, key)),
        order: new RoomOrder(name, host),
      };
      this.#rooms.set(name, room);
      this.#store.hold?.(name);
    }
    return room;
  }

  /** Members here and on other hubs. */
  #count(room: Room): number {
    return room.members.size +
      (this.#cluster.view.size > 0 ? this.#cluster.view.count(room.name) : 0);
  }

  /** Member names in join order (this hub's first), at most `limit` of them. */
  #names(room: Room, limit = Infinity): string[] {
    const list = names(room, limit);
    if (this.#cluster.view.size === 0 || list.length >= limit) return list;
    return list.concat(this.#cluster.view.names(room.name, limit - list.length));
  }

  // --- Envelopes: everything that happens reaches members through here. ---

  #receiveEnvelope(envelope: Envelope): void {
    const own = envelope.origin === this.#origin;
    switch (envelope.kind) {
      case "message":
        return this.#onMessage(envelope);
      case "joined": {
        if (!own) this.#cluster.change(envelope.origin, envelope.seq, envelope.room, envelope.name);
        const room = this.#rooms.get(envelope.room);
        if (!room) return;
        const actor = own ? this.#byId.get(envelope.actor ?? "") : undefined;
        this.#told(room, actor ?? envelope.name, actor, envelope.ts);
        if (!own) this.#resolveClash(room.name, envelope.name, envelope.origin);
        return;
      }
      case "left": {
        if (!own) {
          this.#cluster.change(
            envelope.origin,
            envelope.seq,
            envelope.room,
            undefined,
            envelope.name,
          );
        }
        const room = this.#rooms.get(envelope.room);
        if (room) this.#toldLeft(room, envelope.name, envelope.ts);
        return;
      }
      case "renamed": {
        if (!own) {
          this.#cluster.change(
            envelope.origin,
            envelope.seq,
            envelope.room,
            envelope.to,
            envelope.from,
          );
        }
        const room = this.#rooms.get(envelope.room);
        if (!room) return;
        const actor = own ? this.#byId.get(envelope.actor ?? "") : undefined;
        const { from, to, ts } = envelope;
        this.#broadcast(room, { type: "renamed", room: room.name, from, to, ts }, actor);
        if (!own) this.#resolveClash(room.name, to, envelope.origin);
        return this.#reclaim(room, from);
      }
      case "typing": {
        const room = this.#rooms.get(envelope.room);
        if (!room) return;
        const actor = own ? this.#byId.get(envelope.actor ?? "") : undefined;
        const { name, ts } = envelope;
        return this.#broadcast(room, { type: "typing", room: room.name, name, ts }, actor);
      }
    }
    return this.#cluster.control(envelope);
  }

  #toldJoined(change: Change, ts: number): void {
    const room = this.#rooms.get(change.room);
    if (room) this.#told(room, change.name, undefined, ts);
  }

  #toldLeftChange(change: Change, ts: number): void {
    const room = this.#rooms.get(change.room);
    if (room) this.#toldLeft(room, change.name, ts);
  }

  /** Tells a room that someone came: a notice, or a line in the next summary in a big room. */
  #told(room: Room, who: Member | string, actor: Member | undefined, ts: number): void {
    if (this.#count(room) > this.#bigRoom) return this.#notePresence(room, who);
    const name = typeof who === "string" ? who : who.name;
    this.#broadcast(room, { type: "joined", room: room.name, name, ts }, actor);
  }

  #toldLeft(room: Room, name: string, ts: number): void {
    if (this.#count(room) >= this.#bigRoom) this.#notePresence(room, undefined, name);
    else this.#broadcast(room, { type: "left", room: room.name, name, ts });
    this.#reclaim(room, name);
  }

  /** A name freed up: a member here who wanted it (and got a suffix instead) takes it back. */
  #reclaim(room: Room, freed: string): void {
    const first = room.names.claimant(freed);
    if (first) this.#setName(first, first.wanted);
  }

  /** Another hub's member took a name one of ours holds: the hub with the greater tag yields. */
  #resolveClash(roomName: string, name: string, origin: string): void {
    const room = this.#rooms.get(roomName);
    const holder = room?.names.holder(name);
    if (!room || !holder || this.#origin < origin) return;
    this.#setName(holder, room.names.free(holder.wanted));
  }

  /**
   * Queues a join (the member, named as it is when the summary goes) or a leave (the name it
   * left under) in a big room; the first one of a round schedules the summary.
   */
  #notePresence(room: Room, joined: Member | string | undefined, left?: string): void {
    if (!room.presence) {
      room.presence = { joined: [], left: [] };
      this.#deferPresence(() => this.#flushPresence(room), () => this.#count(room));
    }
    if (joined !== undefined) room.presence.joined.push(joined);
    if (left !== undefined) room.presence.left.push(left);
  }

  #flushPresence(room: Room): void {
    const round = room.presence;
    room.presence = undefined;
    if (!round || this.#rooms.get(room.name) !== room) return;
    // Current names of those who came and are still here (one may have been renamed since).
    const now = (who: Member) => who.room === room && room.members.has(who) ? who.name : undefined;
    this.#broadcast(room, summary(room.name, round, now, this.#count(room), this.#now()));
  }

  /**
   * A stored message reaches this hub: delivered in id order, once. One that arrives ahead of
   * an earlier one (sent from another hub, still in flight) waits a moment for it; if it does
   * not come, the store fills the gap.
   */
  #onMessage(envelope: MessageEnvelope): void {
    // The store moved to a new id space (it lost its data): start the rooms' order afresh.
    if (this.#store.epoch !== this.#epoch) this.#rebase();
    if (envelope.mark !== undefined && envelope.epoch === this.#store.epoch) {
      this.#store.seen?.(envelope.mark);
    }
    const room = this.#rooms.get(envelope.message.room);
    if (!room) return;
    // From a hub with its own store (workers without a shared one): its ids are not ours to
    // order or deduplicate by, so it is passed on as it comes.
    if (envelope.epoch !== this.#store.epoch) return this.#deliverMessage(room, envelope);
    room.order.accept(envelope);
  }

  /**
   * A message to everyone in its room; its author (if here) gets its copy with its `ref`: the
   * one this envelope names, or the one waiting in the room's acknowledgements (the message came
   * through another envelope, or from the store).
   */
  #deliverMessage(room: Room, envelope: MessageEnvelope): void {
    const event = asEvent(envelope.message);
    const waiting = room.acks?.get(event.id);
    if (waiting) room.acks!.delete(event.id);
    let author = envelope.origin === this.#origin
      ? this.#byId.get(envelope.actor ?? "")
      : undefined;
    let ref = envelope.ref;
    if (waiting && (author === undefined || author === waiting.member)) {
      author = waiting.member;
      ref = waiting.ref;
    }
    this.#broadcast(room, event, author, event.id);
    // The author's copy is its acknowledgement; plain-text authors get none (the seed's rule).
    // An author who moved to another room while a shared store was storing it still learns
    // that it was kept (the event names its room).
    if (author?.view.acks) {
      this.#sendTo(author, withRef(event, ref), author.room === room ? event.id : undefined);
    }
    if (waiting && waiting.member !== author && waiting.member.view.acks) {
      this.#sendTo(waiting.member, withRef(event, waiting.ref));
    }
  }

  /** Sends an event to everyone in a room but `skip`, encoding it at most once per view. */
  #broadcast(room: Room, event: ServerEvent, skip?: Member, id?: number): void {
    // Two views: the last one used and its frame, and the other one's, encoded on first need.
    let view: View | undefined;
    let frame: Frame | null = null;
    let otherView: View | undefined;
    let otherFrame: Frame | null = null;
    for (const member of room.members) {
      if (member === skip) continue;
      if (member.view !== view) {
        if (member.view === otherView) {
          [view, frame, otherView, otherFrame] = [otherView, otherFrame, view, frame];
        } else {
          [otherView, otherFrame] = [view, frame];
          view = member.view;
          frame = frameOf(view.encode(event));
        }
      }
      if (frame) this.#deliver(member, frame, id, room);
    }
  }

  #sendTo(member: Member, event: ServerEvent, id?: number): void {
    const frame = frameOf(member.view.encode(event));
    if (frame) this.#deliver(member, frame, id);
  }

  /**
   * Sends a frame, unless it is a message the member's welcome already carried. `room`: the room
   * it is broadcast to (see {@link Connection.send}); a frame held for a welcome goes alone.
   */
  #deliver(member: Member, frame: Frame, id?: number, room?: Room): void {
    if (member.pending) {
      member.pending.push({ frame, id });
      return;
    }
    if (!member.conn.open || (id !== undefined && id <= member.floor)) return;
    const metrics = this.#metrics;
    metrics.deliveries++;
    metrics.bytesOut += frame.bytes;
    try {
      member.conn.send(frame.data, frame.bytes, room);
    } catch {
      member.conn.close(CloseCode.internalError, "send failed");
    }
  }
}

/** The room's member names in join order, at most `limit` of them. */
function names(room: Room, limit = Infinity): string[] {
  const list: string[] = [];
  for (const member of room.members) {
    if (list.length >= limit) break;
    list.push(member.name);
  }
  return list;
}

function withRef<E extends ServerEvent>(event: E, ref: Ref | undefined): E {
  return ref === undefined ? event : { ...event, ref };
}
