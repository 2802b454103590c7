/**
 * The wire protocol, both directions, both formats. docs/PROTOCOL.md is its prose twin.
 *
 * A connection speaks plain text (no subprotocol: REPLs, scripts, terminals) or JSON
 * (subprotocol {@link JSON_PROTOCOL}: the page and apps). Parsing turns one incoming
 * frame into one validated {@link ClientMessage} or one {@link ProtocolError}; encoding
 * turns one {@link ServerEvent} into one line, done once per format per broadcast.
 */

import type { Message } from "../store/history.ts";
import { utf8Length } from "../base/utf8.ts";

export { NATIVE_FROM, utf8Length } from "../base/utf8.ts";
import { checkName, checkRoom, NAME_RULE, quote, ROOM_RULE, sanitize } from "./text.ts";

/** The subprotocol that selects JSON. */
export const JSON_PROTOCOL = "natter.v1";

/** How a connection reads and writes. */
export type Format = "text" | "json";

import {
  type Action,
  type CommunityMessage,
  parseCommunityJson,
  parseCommunityText,
  type Ref,
} from "./commands.ts";
export type { Action, Ref } from "./commands.ts";

/** Default cap on one incoming frame, in UTF-8 bytes. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024;

/** Most messages one history request may return. */
export const MAX_HISTORY_PAGE = 200;

/** Every request a client can make. `help` and `quit` exist only as text commands, `typing` only in JSON. */
export type ClientMessage =
  | { type: "say"; text: string; ref?: Ref; key?: string }
  | { type: "me"; text: string; ref?: Ref; key?: string }
  | { type: "nick"; name: string; ref?: Ref }
  | { type: "join"; room: string; ref?: Ref }
  | { type: "who"; ref?: Ref }
  | { type: "history"; limit?: number; before?: number; ref?: Ref }
  | { type: "rooms"; ref?: Ref }
  | { type: "typing" }
  | { type: "token"; token: string; ref?: Ref }
  | { type: "help" }
  | { type: "quit" }
  | CommunityMessage;

/** Why a request was refused. The connection stays open after each of these. */
export type ErrorCode =
  | "bad_json"
  | "bad_message"
  | "unknown_type"
  | "unknown_command"
  | "empty"
  | "too_long"
  | "bad_name"
  | "name_taken"
  | "bad_room"
  | "binary"
  | "rate_limited"
  | "bad_token"
  | "forbidden"
  | "muted"
  | "not_found"
  | "unavailable";

/** A refused request: sent to the requester as an `error` event. */
export interface ProtocolError {
  code: ErrorCode;
  message: string;
  ref?: Ref;
}

/** A chat message as clients see it: the stored message, tagged. */
export type ChatMessage = { type: "message"; ref?: Ref } & Message;

/** Every event the server sends. `ts` is milliseconds since the epoch, server clock. */
export type ServerEvent =
  | {
    type: "welcome";
    protocol: string;
    server: string;
    name: string;
    room: string;
    /** Names in join order; in a big room only the first ones (`count` says how many there are). */
    members: string[];
    count?: number;
    /** Names the id space of `history` and `since` (see docs/PROTOCOL.md). */
    epoch?: string;
    /** Recent messages, oldest first (JSON clients only). */
    history?: ChatMessage[];
    /** Present when the client asked with `since`: whether `history` is all it missed. */
    recovered?: boolean;
    /** The room's topic, when it has one. */
    topic?: string;
    /** What the member may do, from its signed token, when it is more than a member's. */
    role?: "moderator" | "admin";
    ref?: Ref;
  }
  | ChatMessage
  | { type: "history"; room: string; messages: ChatMessage[]; more: boolean; ref?: Ref }
  | { type: "rooms"; rooms: { room: string; members: number }[]; ref?: Ref }
  | { type: "typing"; room: string; name: string; ts: number }
  | {
    type: "presence";
    room: string;
    /** Who came and went since the last summary (the first names; the counts are complete). */
    joined: string[];
    left: string[];
    joinedCount: number;
    leftCount: number;
    /** Members now. */
    count: number;
    ts: number;
  }
  | { type: "joined"; room: string; name: string; ts: number }
  | { type: "left"; room: string; name: string; ts: number }
  | { type: "renamed"; room: string; from: string; to: string; ts: number; ref?: Ref }
  | { type: "members"; room: string; members: string[]; ref?: Ref }
  | { type: "error"; code: ErrorCode; message: string; ref?: Ref }
  /**
   * The store did not say whether it kept a message in time: it may be delivered yet (its
   * author then gets the acknowledgement), or not at all. A resend with the same `key` is safe.
   */
  | { type: "unknown"; message: string; ref?: Ref; key?: string }
  | { type: "notice"; text: string; ref?: Ref }
  /** A moderator acted on someone in the room (`until`: when a mute or ban ends). */
  | {
    type: "moderated";
    room: string;
    action: Action;
    name: string;
    by: string;
    reason?: string;
    until?: number;
    ts: number;
    ref?: Ref;
  }
  /** The room's topic, as set (`by`) or as asked for; empty when it has none. */
  | { type: "topic"; room: string; topic: string; by?: string; ts: number; ref?: Ref }
  /** A moderator deleted message `id` of the room: clients show its tombstone. */
  | { type: "deleted"; room: string; id: number; by: string; ts: number; ref?: Ref }
  /** A private message: to its one recipient, and back to its sender with its `ref`. */
  | { type: "private"; from: string; to: string; text: string; ts: number; ref?: Ref };

/** WebSocket close codes natter uses, with their meaning. */
export const CloseCode = {
  /** The client asked to leave (`/quit`). */
  normal: 1000,
  /** The server is shutting down. */
  goingAway: 1001,
  /** The client kept sending faster than the rate limit after being told to slow down. */
  policy: 1008,
  /** A frame far over the size cap. */
  tooBig: 1009,
  /** Sending to this connection failed; it is dropped so others are not held up. */
  internalError: 1011,
  /** The server is over its memory budget and dropped this connection to relieve it. */
  tryAgainLater: 1013,
  /** The client stopped reading: its unsent data passed the cap. */
  tooSlow: 4001,
  /** Its signed token expired and was not renewed (a `token` message) in time. */
  tokenExpired: 4003,
  /** A moderator removed it (`/kick`), or an admin banned it (`/ban`). */
  removed: 4004,
} as const;

/** The outcome of parsing one frame. */
export type Parsed = { ok: true; msg: ClientMessage } | { ok: false; error: ProtocolError };

const MAX_REF_LENGTH = 64;
/**
 * A message's idempotency key: a resend with the same key (in the same room, within
 * `KEY_WINDOW_MS` (lib/store/history.ts)) is acknowledged as the first one and not shown twice.
 */
const KEY = /^[A-Za-z0-9_.:-]{1,64}$/;

function fail(code: ErrorCode, message: string, ref?: Ref): Parsed {
  return { ok: false, error: ref === undefined ? { code, message } : { code, message, ref } };
}

function tooLong(data: string, maxBytes: number): boolean {
  // A UTF-8 encoding is never shorter than the UTF-16 one, nor more than 3x longer.
  if (data.length > maxBytes) return true;
  return data.length * 3 > maxBytes && utf8Length(data) > maxBytes;
}

/** Whether a text is empty or white space only; most start with a character that says not. */
function isBlank(text: string): boolean {
  const first = text.charCodeAt(0);
  if (first > 0x20 && first < 0x7f) return false; // printable ASCII is never white space
  return text.trim() === "";
}

function chat(type: "say" | "me", raw: string, maxBytes: number, ref?: Ref): Parsed {
  if (isBlank(raw)) return fail("empty", "message is empty", ref);
  const text = sanitize(raw);
  // Control characters grow into visible symbols; the cap holds for what is stored and sent.
  if (utf8Length(text) > maxBytes) {
    return fail(
      "too_long",
      `message is over ${maxBytes} bytes once control characters are shown`,
      ref,
    );
  }
  return { ok: true, msg: ref === undefined ? { type, text } : { type, text, ref } };
}

function nick(raw: string, ref?: Ref): Parsed {
  if (raw.trim() === "") return fail("bad_name", `a name is needed: use ${NAME_RULE}`, ref);
  const name = checkName(raw.trim());
  if (name === null) {
    return fail("bad_name", `name ${quote(raw)} is not allowed: use ${NAME_RULE}`, ref);
  }
  return {
    ok: true,
    msg: ref === undefined ? { type: "nick", name } : { type: "nick", name, ref },
  };
}

/** A renewed signed token (verified by the hub's `verify`, lib/transport/identity.ts). */
function renewal(token: string, ref?: Ref): Parsed {
  if (token === "") return fail("bad_token", "a token is needed: /token TOKEN", ref);
  return {
    ok: true,
    msg: ref === undefined ? { type: "token", token } : { type: "token", token, ref },
  };
}

function join(raw: string, ref?: Ref): Parsed {
  const room = checkRoom(raw.trim());
  if (room === null) {
    return fail("bad_room", `room ${quote(raw)} is not allowed: use ${ROOM_RULE}`, ref);
  }
  return {
    ok: true,
    msg: ref === undefined ? { type: "join", room } : { type: "join", room, ref },
  };
}

/**
 * Parses one plain-text frame: a chat line, or a command (`/nick`, `/join`, `/who`, `/me`,
 * `/help`, `/quit`). A line starting with `//` is a chat line starting with `/`.
 */
export function parseText(data: string, maxBytes = DEFAULT_MAX_MESSAGE_BYTES): Parsed {
  if (tooLong(data, maxBytes)) return fail("too_long", `message is over ${maxBytes} bytes`);
  // One trailing newline (a REPL's Enter) is not part of the line; most lines have none.
  const line = data.endsWith("\n") ? data.slice(0, data.endsWith("\r\n") ? -2 : -1) : data;
  if (!line.startsWith("/")) return chat("say", line, maxBytes);
  if (line.startsWith("//")) return chat("say", line.slice(1), maxBytes);
  const space = line.search(/\s/);
  const command = (space === -1 ? line.slice(1) : line.slice(1, space)).toLowerCase();
  const arg = space === -1 ? "" : line.slice(space + 1);
  switch (command) {
    case "nick":
    case "name":
      return nick(arg);
    case "join":
      return join(arg);
    case "who":
    case "names":
      return { ok: true, msg: { type: "who" } };
    case "rooms":
      return { ok: true, msg: { type: "rooms" } };
    case "history": {
      if (arg.trim() === "") return { ok: true, msg: { type: "history" } };
      const limit = count(arg.trim());
      if (limit === null) {
        return fail("bad_message", `usage: /history [N], N from 1 to ${MAX_HISTORY_PAGE}`);
      }
      return { ok: true, msg: { type: "history", limit } };
    }
    case "me":
      return chat("me", arg.trim(), maxBytes);
    case "help":
      return { ok: true, msg: { type: "help" } };
    case "quit":
      return { ok: true, msg: { type: "quit" } };
    case "token":
      return renewal(arg.trim());
    default: {
      const community = parseCommunityText(command, arg, maxBytes);
      if (community) {
        return community.ok ? community : fail(community.code, community.message);
      }
      return fail(
        "unknown_command",
        `unknown command ${
          quote("/" + command)
        }: type /help for the list, or // to send a line starting with /`,
      );
    }
  }
}

/** A positive whole number (from a JSON number, or digits in a text command), or null. */
function count(value: unknown): number | null {
  const number = typeof value === "string" && /^\d{1,9}$/.test(value) ? Number(value) : value;
  if (typeof number !== "number" || !Number.isSafeInteger(number) || number < 1) return null;
  if (typeof value === "string" && number > MAX_HISTORY_PAGE) return null;
  return number;
}

function field(obj: Record<string, unknown>, key: string, ref?: Ref): string | Parsed {
  const value = obj[key];
  if (typeof value === "string") return value;
  return fail("bad_message", `'${obj.type}' needs a string field '${key}'`, ref);
}

/** A `"ref": …` at a frame's start or end, found without parsing the frame. */
const REF_FIELD = /"ref"\s*:\s*("(?:[^"\\]|\\.){0,64}"|-?\d{1,15}(?:\.\d+)?)/;

/**
 * The `ref` of a JSON frame that is refused before it is parsed (too long, or over the rate
 * limit), so that the client learns which of its messages was refused. Only the first and last
 * 256 characters are looked at (where clients put it): bounded work for a frame that is refused.
 */
export function refIn(data: string): Ref | undefined {
  const ends = data.length <= 512 ? data : `${data.slice(0, 256)}\n${data.slice(-256)}`;
  const match = REF_FIELD.exec(ends);
  if (!match) return undefined;
  try {
    const ref: unknown = JSON.parse(match[1]!);
    return typeof ref === "number" || typeof ref === "string" ? ref : undefined;
  } catch {
    return undefined;
  }
}

/** Parses one `natter.v1` frame: a JSON object with a `type` and an optional `ref`. */
export function parseJson(data: string, maxBytes = DEFAULT_MAX_MESSAGE_BYTES): Parsed {
  if (tooLong(data, maxBytes)) {
    return fail("too_long", `message is over ${maxBytes} bytes`, refIn(data));
  }
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch (error) {
    return fail("bad_json", `frame is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return fail("bad_message", "a frame must be a JSON object with a string 'type'");
  }
  const obj = value as Record<string, unknown>;
  let ref: Ref | undefined;
  if (obj.ref !== undefined) {
    const okString = typeof obj.ref === "string" && [...obj.ref].length <= MAX_REF_LENGTH;
    const okNumber = typeof obj.ref === "number" && Number.isFinite(obj.ref);
    if (!okString && !okNumber) {
      return fail(
        "bad_message",
        `'ref' must be a number or a string of up to ${MAX_REF_LENGTH} characters`,
      );
    }
    ref = obj.ref as Ref;
  }
  if (typeof obj.type !== "string") {
    return fail("bad_message", "a frame must be a JSON object with a string 'type'", ref);
  }
  switch (obj.type) {
    case "say":
    case "me": {
      const text = field(obj, "text", ref);
      if (typeof text !== "string") return text;
      const parsed = chat(obj.type, text, maxBytes, ref);
      if (obj.key === undefined || !parsed.ok) return parsed;
      if (typeof obj.key !== "string" || !KEY.test(obj.key)) {
        return fail(
          "bad_message",
          "'key' must be 1-64 letters, digits or - _ . : (the same for every resend of one message)",
          ref,
        );
      }
      return { ok: true, msg: { ...parsed.msg, key: obj.key } as ClientMessage };
    }
    case "nick": {
      const name = field(obj, "name", ref);
      return typeof name === "string" ? nick(name, ref) : name;
    }
    case "join": {
      const room = field(obj, "room", ref);
      return typeof room === "string" ? join(room, ref) : room;
    }
    case "who":
    case "rooms":
      return { ok: true, msg: ref === undefined ? { type: obj.type } : { type: obj.type, ref } };
    case "typing":
      return { ok: true, msg: { type: "typing" } };
    case "token": {
      const token = field(obj, "token", ref);
      return typeof token === "string" ? renewal(token, ref) : token;
    }
    case "history": {
      const msg: { type: "history"; limit?: number; before?: number; ref?: Ref } = {
        type: "history",
      };
      for (const key of ["limit", "before"] as const) {
        if (obj[key] === undefined) continue;
        const value = typeof obj[key] === "number" ? count(obj[key]) : null;
        if (value === null || (key === "limit" && value > MAX_HISTORY_PAGE)) {
          const most = key === "limit" ? ` to ${MAX_HISTORY_PAGE}` : " or more";
          return fail("bad_message", `'${key}' must be a whole number from 1${most}`, ref);
        }
        msg[key] = value;
      }
      if (ref !== undefined) msg.ref = ref;
      return { ok: true, msg };
    }
    default: {
      const community = parseCommunityJson(obj, ref, maxBytes);
      if (community) {
        return community.ok ? community : fail(community.code, community.message, ref);
      }
      return fail(
        "unknown_type",
        `unknown type ${
          quote(obj.type)
        }: expected say, me, nick, join, who, history, rooms, typing, token, msg, topic, kick, mute, unmute, ban, unban or delete`,
        ref,
      );
    }
  }
}

/** Parses one frame in the connection's format. */
export function parse(format: Format, data: string, maxBytes?: number): Parsed {
  return format === "json" ? parseJson(data, maxBytes) : parseText(data, maxBytes);
}
