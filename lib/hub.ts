/**
 * The chat hub: rooms, members, names, and who hears what. It never touches a socket;
 * it talks to {@link Connection}s, so tests drive it with fakes and any transport fits.
 */

import { encodeJson, encodeText, HELP } from "./encode.ts";
import { type HistoryStore, MemoryStore, type Message } from "./history.ts";
import { Metrics } from "./metrics.ts";
import {
  CloseCode,
  type Format,
  JSON_PROTOCOL,
  type MessageEvent,
  parse,
  type ProtocolError,
  type Ref,
  type ServerEvent,
  utf8Length,
} from "./protocol.ts";
import { checkName, checkRoom, MAX_NAME, NAME_RULE, nameKey, quote, ROOM_RULE } from "./text.ts";

/** What the hub needs of a client connection. */
export interface Connection {
  /** Unique for the life of the process. */
  readonly id: string;
  readonly format: Format;
  /** False once the connection is closing or closed; the hub then stops sending. */
  readonly open: boolean;
  /**
   * Sends one event (one line), now or packed with others at the end of the turn. `bytes` is
   * its UTF-8 length. May throw; the hub then closes the connection.
   */
  send(event: string, bytes: number): void;
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
  /** Runs a presence summary later; by default after {@link PRESENCE_INTERVAL_MS}. */
  deferPresence?: (flush: () => void) => void;
}

/**
 * Above this many members, a room is big: joins and leaves are told as one `presence`
 * summary per {@link PRESENCE_INTERVAL_MS}, and a welcome lists only this many names (with the
 * count). Telling every member of every join costs O(N²) while a big room fills up.
 */
export const BIG_ROOM = 100;
/** How often a big room hears who came and went, at most. */
export const PRESENCE_INTERVAL_MS = 500;
/** Names a presence summary spells out in each list; the counts say the rest. */
const SUMMARY_NAMES = 50;

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
export const DEFAULT_HISTORY_ON_JOIN = 50;

interface Room {
  readonly name: string;
  /** Members in join order. */
  readonly members: Set<Member>;
  /** The same members by {@link nameKey}, for unique names. */
  readonly names: Map<string, Member>;
  /** Joins and leaves not yet told, in a room above the big-room size (see {@link BIG_ROOM}). */
  presence?: { joined: Member[]; left: string[] } | undefined;
}

/** An encoded event and its size, computed once and shared by its recipients. */
interface Frame {
  readonly data: string;
  readonly bytes: number;
}

interface Member {
  readonly conn: Connection;
  name: string;
  /** The name it asked for; `name` may carry a suffix where that one was taken. */
  wanted: string;
  room: Room;
  /** When its last `typing` was passed on. */
  typedAt: number;
}

/** Rooms of members, and the rules for who hears what. */
export class Hub {
  readonly #rooms = new Map<string, Room>();
  readonly #members = new Map<Connection, Member>();
  readonly #now: () => number;
  readonly #server: string;
  readonly #defaultRoom: string;
  readonly #maxMessageBytes: number | undefined;
  readonly #metrics: Metrics;
  readonly #store: HistoryStore;
  readonly #historyOnJoin: number;
  readonly #typingIntervalMs: number;
  readonly #bigRoom: number;
  readonly #deferPresence: (flush: () => void) => void;
  readonly #presenceTimers = new Set<ReturnType<typeof setTimeout>>();

  constructor(options: HubOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#server = options.server ?? "natter";
    this.#defaultRoom = options.defaultRoom ?? "lobby";
    this.#maxMessageBytes = options.maxMessageBytes;
    this.#metrics = options.metrics ?? new Metrics();
    this.#store = options.store ?? new MemoryStore();
    this.#historyOnJoin = options.historyOnJoin ?? DEFAULT_HISTORY_ON_JOIN;
    this.#typingIntervalMs = options.typingIntervalMs ?? 2000;
    this.#bigRoom = options.bigRoom ?? BIG_ROOM;
    this.#deferPresence = options.deferPresence ?? ((flush) => {
      const timer = setTimeout(() => {
        this.#presenceTimers.delete(timer);
        flush();
      }, PRESENCE_INTERVAL_MS);
      this.#presenceTimers.add(timer);
    });
  }

  /** Number of connections in the hub. */
  get connections(): number {
    return this.#members.size;
  }

  /** Number of rooms with at least one member. */
  get rooms(): number {
    return this.#rooms.size;
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
      name: base,
      wanted: base,
      room: this.#room(roomName),
      typedAt: -Infinity,
    };
    this.#members.set(conn, member);
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
        return this.#say(member, msg.text, msg.type === "me", msg.ref);
      case "nick":
        return this.#rename(member, msg.name, msg.ref);
      case "join":
        return this.#move(member, msg.room, msg.ref);
      case "who":
        return this.#sendTo(
          member,
          withRef(
            { type: "members", room: member.room.name, members: names(member.room) },
            msg.ref,
          ),
        );
      case "history": {
        const limit = msg.limit ?? (conn.format === "text" ? 20 : DEFAULT_HISTORY_ON_JOIN);
        // One more than asked says whether there is more; the byte budget may trim the page.
        const found = this.#store.latest(member.room.name, limit + 1, msg.before);
        const page = fitting(found.slice(-limit));
        const event = {
          type: "history" as const,
          room: member.room.name,
          messages: page.map(asEvent),
          more: found.length > page.length,
        };
        return this.#sendTo(member, withRef(event, msg.ref));
      }
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
        text: member.conn.format === "text" ? `* ${text}` : text,
      });
    }
  }

  /** Rooms with members, the busiest first (at most 100). */
  roomList(): { room: string; members: number }[] {
    return [...this.#rooms.values()]
      .map((room) => ({ room: room.name, members: room.members.size }))
      .sort((a, b) => b.members - a.members || a.room.localeCompare(b.room))
      .slice(0, 100);
  }

  /** Closes every connection with the given code (e.g. 1001 at shutdown). */
  closeAll(code: number, reason: string): void {
    for (const timer of this.#presenceTimers) clearTimeout(timer);
    this.#presenceTimers.clear();
    for (const conn of [...this.#members.keys()]) conn.close(code, reason);
  }

  #say(member: Member, text: string, action: boolean, ref: Ref | undefined): void {
    const room = member.room;
    let stored: Message;
    try {
      // Stored before anyone hears of it: the author's copy is the promise that it was kept.
      stored = this.#store.append(room.name, {
        ts: this.#now(),
        from: member.name,
        text,
        ...(action ? { action: true as const } : {}),
      });
    } catch (error) {
      const message = `your message was not sent: the server could not store it (${
        (error as Error).message
      })`;
      return this.#sendTo(member, {
        type: "error",
        code: "unavailable",
        message,
        ...refField(ref),
      });
    }
    const event = asEvent(stored);
    this.#broadcast(room, event, member);
    // The author's copy is its acknowledgement; plain-text authors get none (the seed's rule).
    if (member.conn.format === "json") this.#sendTo(member, withRef(event, ref));
  }

  #rename(member: Member, name: string, ref: Ref | undefined): void {
    const room = member.room;
    const holder = room.names.get(nameKey(name));
    if (holder && holder !== member) {
      return this.#sendTo(member, {
        type: "error",
        code: "name_taken",
        message: `name ${quote(name)} is taken in #${room.name}`,
        ...refField(ref),
      });
    }
    const event: ServerEvent = {
      type: "renamed",
      room: room.name,
      from: member.name,
      to: name,
      ts: this.#now(),
    };
    room.names.delete(nameKey(member.name));
    member.name = member.wanted = name;
    room.names.set(nameKey(name), member);
    if (event.from !== name) this.#broadcast(room, event, member);
    this.#sendTo(member, withRef(event, ref));
  }

  #move(member: Member, roomName: string, ref: Ref | undefined): void {
    if (member.room.name === roomName) {
      return this.#sendTo(member, this.#welcome(member, ref, undefined));
    }
    this.#exit(member);
    member.room = this.#room(roomName);
    this.#enter(member, member.wanted, ref);
  }

  /** Puts a member into its room under a free variant of `base`, welcomes it, tells the room. */
  #enter(member: Member, base: string, ref?: Ref, since?: number): void {
    const room = member.room;
    member.name = freeName(room, base);
    room.members.add(member);
    room.names.set(nameKey(member.name), member);
    // The welcome (with its history) and membership happen in one turn, so no message can
    // fall between what the history holds and what arrives live.
    this.#sendTo(member, this.#welcome(member, ref, since));
    if (room.members.size > this.#bigRoom) return this.#notePresence(room, member);
    this.#broadcast(
      room,
      { type: "joined", room: room.name, name: member.name, ts: this.#now() },
      member,
    );
  }

  /**
   * Queues a join (the member, named as it is when the summary goes) or a leave (the name it
   * left under) in a big room; the first one of a round schedules the summary.
   */
  #notePresence(room: Room, joined: Member | undefined, left?: string): void {
    if (!room.presence) {
      room.presence = { joined: [], left: [] };
      this.#deferPresence(() => this.#flushPresence(room));
    }
    if (joined) room.presence.joined.push(joined);
    if (left !== undefined) room.presence.left.push(left);
  }

  #flushPresence(room: Room): void {
    const presence = room.presence;
    room.presence = undefined;
    if (!presence || this.#rooms.get(room.name) !== room) return;
    this.#broadcast(room, {
      type: "presence",
      room: room.name,
      // Current names of those who came and are still here (one may have been renamed since).
      joined: presence.joined.filter((m) => m.room === room && room.members.has(m)).slice(
        0,
        SUMMARY_NAMES,
      )
        .map((m) => m.name),
      left: presence.left.slice(0, SUMMARY_NAMES),
      joinedCount: presence.joined.length,
      leftCount: presence.left.length,
      count: room.members.size,
      ts: this.#now(),
    });
  }

  #welcome(member: Member, ref: Ref | undefined, since: number | undefined): ServerEvent {
    const room = member.room.name;
    const welcome: ServerEvent = {
      type: "welcome",
      protocol: member.conn.format === "json" ? JSON_PROTOCOL : "text",
      server: this.#server,
      name: member.name,
      room,
      members: names(member.room, this.#bigRoom),
      count: member.room.members.size,
    };
    // Plain-text clients get no replay: the seed's REPL experience stays as it was.
    if (member.conn.format === "json") {
      welcome.epoch = this.#store.epoch;
      const missed = since === undefined ? undefined : this.#store.after(room, since);
      // All that was missed, if it is kept and fits one frame; otherwise the latest, and say so.
      const recovered = missed?.complete === true &&
        fitting(missed.messages).length === missed.messages.length;
      if (missed) welcome.recovered = recovered;
      const history = recovered
        ? missed!.messages
        : fitting(this.#store.latest(room, this.#historyOnJoin));
      welcome.history = history.map(asEvent);
    }
    return withRef(welcome, ref);
  }

  /** Passes `typing` on to the room's other JSON members, at most once per interval. */
  #typing(member: Member): void {
    const now = this.#now();
    if (now - member.typedAt < this.#typingIntervalMs) return;
    member.typedAt = now;
    this.#broadcast(member.room, {
      type: "typing",
      room: member.room.name,
      name: member.name,
      ts: now,
    }, member);
  }

  #exit(member: Member): void {
    const room = member.room;
    if (!room.members.delete(member)) return;
    room.names.delete(nameKey(member.name));
    if (room.members.size === 0) this.#rooms.delete(room.name);
    else if (room.members.size >= this.#bigRoom) this.#notePresence(room, undefined, member.name);
    else {this.#broadcast(room, {
        type: "left",
        room: room.name,
        name: member.name,
        ts: this.#now(),
      });}
  }

  #room(name: string): Room {
    let room = this.#rooms.get(name);
    if (!room) this.#rooms.set(name, room = { name, members: new Set(), names: new Map() });
    return room;
  }

  /** Sends an event to everyone in a room but `skip`, encoding it at most once per format. */
  #broadcast(room: Room, event: ServerEvent, skip?: Member): void {
    let text: Frame | null | undefined;
    let json: Frame | null | undefined;
    for (const member of room.members) {
      if (member === skip) continue;
      let frame: Frame | null;
      if (member.conn.format === "json") {
        frame = json === undefined ? (json = frameOf(encodeJson(event))) : json;
      } else frame = text === undefined ? (text = frameOf(encodeText(event))) : text;
      if (frame) this.#deliver(member, frame);
    }
  }

  #sendTo(member: Member, event: ServerEvent): void {
    const data = member.conn.format === "json" ? encodeJson(event) : encodeText(event);
    const frame = frameOf(data);
    if (frame) this.#deliver(member, frame);
  }

  #deliver(member: Member, frame: Frame): void {
    if (!member.conn.open) return;
    const metrics = this.#metrics;
    metrics.deliveries++;
    metrics.bytesOut += frame.bytes;
    try {
      member.conn.send(frame.data, frame.bytes);
    } catch {
      member.conn.close(CloseCode.internalError, "send failed");
    }
  }
}

/** A frame to send, or null for an event this format does not carry. */
function frameOf(data: string | null): Frame | null {
  return data === null ? null : { data, bytes: utf8Length(data) };
}

/** Most bytes (roughly, as JSON) of history that one welcome or history reply carries. */
export const HISTORY_FRAME_BYTES = 512 * 1024;

/** The newest of `messages` (oldest first) that fit in {@link HISTORY_FRAME_BYTES}. */
function fitting(messages: Message[]): Message[] {
  let bytes = 0;
  let start = messages.length;
  while (start > 0) {
    const message = messages[start - 1]!;
    // JSON doubles at worst: quotes and backslashes are escaped; 96 for the fields around it.
    bytes += 2 * (utf8Length(message.text) + message.from.length) + 96;
    if (bytes > HISTORY_FRAME_BYTES) break;
    start--;
  }
  return messages.slice(start);
}

function asEvent(message: Message): MessageEvent {
  return { type: "message", ...message };
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

function refField(ref: Ref | undefined): { ref?: Ref } {
  return ref === undefined ? {} : { ref };
}

function withRef<E extends ServerEvent>(event: E, ref: Ref | undefined): E {
  return ref === undefined ? event : { ...event, ref };
}

/** `base`, or `base-2`, `base-3`… (shortened to fit) when another member holds it. */
function freeName(room: Room, base: string): string {
  if (!room.names.has(nameKey(base))) return base;
  for (let n = 2;; n++) {
    const suffix = `-${n}`;
    const name = [...base].slice(0, MAX_NAME - suffix.length).join("") + suffix;
    if (!room.names.has(nameKey(name))) return name;
  }
}
