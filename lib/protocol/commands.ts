/**
 * The requests of a run community (issue 17), both formats: moderation (`/kick`, `/mute`,
 * `/unmute`, `/ban`, `/unban`), the room's topic (`/topic`) and private messages (`/msg`).
 * lib/protocol/protocol.ts hands these commands and types here; docs/PROTOCOL.md describes them.
 */

import { utf8Length } from "../base/utf8.ts";
import { checkName, NAME_RULE, quote, sanitize } from "./text.ts";

/** A client's own reference for a request, echoed on the reply (the acknowledgement). */
export type Ref = string | number;

/** What a moderator can do to someone. */
export type Action = "kick" | "mute" | "unmute" | "ban" | "unban";

/** Longest topic, in characters. */
export const MAX_TOPIC = 300;
/** Longest reason given with a moderator's action, in characters. */
export const MAX_REASON = 200;

export type CommunityMessage =
  | {
    type: "moderate";
    action: Action;
    /** A member's name, or (ban, unban) a client address. */
    target: string;
    /** The target is an address, not a name. */
    address?: true;
    /** How long a mute or ban lasts; absent: until lifted. */
    durationMs?: number;
    reason?: string;
    ref?: Ref;
  }
  /** Sets the room's topic; without `topic`, asks for it. An empty topic clears it. */
  | { type: "topic"; topic?: string; ref?: Ref }
  | { type: "msg"; to: string; text: string; ref?: Ref }
  /** Deletes a message of the room by its id (moderators). */
  | { type: "delete"; id: number; ref?: Ref };

type Failure = {
  ok: false;
  code: "bad_message" | "bad_name" | "empty" | "too_long";
  message: string;
};
export type CommandParsed = { ok: true; msg: CommunityMessage } | Failure;

const ACTIONS: ReadonlySet<string> = new Set(["kick", "mute", "unmute", "ban", "unban"]);
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** An IPv4 address, or anything with a colon (IPv6): no name looks like either. */
const ADDRESS = /^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$|:/;

const USAGE: Record<Action | "topic" | "msg" | "delete", string> = {
  kick: "/kick NAME [reason]",
  mute: "/mute NAME [DURATION such as 10m, 2h, 7d] [reason]",
  unmute: "/unmute NAME",
  ban: "/ban NAME|ADDRESS [DURATION] [reason]",
  unban: "/unban NAME|ADDRESS",
  topic: "/topic [TEXT] (/topic - clears it)",
  msg: "/msg NAME TEXT",
  delete: "/delete ID (a message's id, as the page and JSON clients see it)",
};

/** A member's name as others see it: a name, or a guest's (`~` and a name); null if neither. */
function shownName(raw: string): string | null {
  if (!raw.startsWith("~")) return checkName(raw);
  const name = checkName(raw.slice(1));
  return name === null ? null : `~${name}`;
}

function fail(code: Failure["code"], message: string): Failure {
  return { ok: false, code, message };
}

/** A duration such as `90s`, `10m`, `2h` or `7d`, in milliseconds; null when it is not one. */
export function durationOf(raw: string): number | null {
  const match = /^(\d{1,6})([smhd])$/.exec(raw);
  if (!match || Number(match[1]) === 0) return null;
  return Number(match[1]) * UNITS[match[2]!]!;
}

function withRef<T extends object>(msg: T, ref: Ref | undefined): T & { ref?: Ref } {
  return ref === undefined ? msg : { ...msg, ref };
}

/** A moderator's action on a target, checked. */
function moderation(
  action: Action,
  target: string,
  duration: string | undefined,
  reason: string | undefined,
  ref: Ref | undefined,
): CommandParsed {
  const byAddress = (action === "ban" || action === "unban") && ADDRESS.test(target);
  const name = byAddress ? target : shownName(target);
  if (name === null || name === "") {
    const what = action === "ban" || action === "unban" ? "a name or an address" : "a name";
    return fail("bad_name", `usage: ${USAGE[action]}; ${quote(target)} is not ${what}`);
  }
  let durationMs: number | undefined;
  if (duration !== undefined) {
    const ms = durationOf(duration);
    if (ms === null) {
      return fail("bad_message", `usage: ${USAGE[action]}; ${quote(duration)} is not a duration`);
    }
    durationMs = ms;
  }
  const why = reason === undefined ? "" : sanitize(reason.trim()).slice(0, MAX_REASON);
  return {
    ok: true,
    msg: withRef({
      type: "moderate" as const,
      action,
      target: name,
      ...(byAddress ? { address: true as const } : {}),
      ...(durationMs === undefined ? {} : { durationMs }),
      ...(why === "" ? {} : { reason: why }),
    }, ref),
  };
}

function topic(raw: string | undefined, ref: Ref | undefined): CommandParsed {
  if (raw === undefined) return { ok: true, msg: withRef({ type: "topic" as const }, ref) };
  const text = sanitize(raw.trim());
  if ([...text].length > MAX_TOPIC) {
    return fail("too_long", `a topic is at most ${MAX_TOPIC} characters`);
  }
  return { ok: true, msg: withRef({ type: "topic" as const, topic: text }, ref) };
}

function privately(to: string, raw: string, maxBytes: number, ref: Ref | undefined): CommandParsed {
  const name = shownName(to);
  if (name === null) {
    return fail("bad_name", `usage: ${USAGE.msg}; ${quote(to)} is not a name (${NAME_RULE})`);
  }
  if (raw.trim() === "") return fail("empty", `usage: ${USAGE.msg}; the message is empty`);
  const text = sanitize(raw);
  if (utf8Length(text) > maxBytes) return fail("too_long", `message is over ${maxBytes} bytes`);
  return { ok: true, msg: withRef({ type: "msg" as const, to: name, text }, ref) };
}

function deletion(raw: unknown, ref: Ref | undefined): CommandParsed {
  const id = typeof raw === "string" && /^\d{1,15}$/.test(raw.trim()) ? Number(raw.trim()) : raw;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1) {
    return fail("bad_message", `usage: ${USAGE.delete}`);
  }
  return { ok: true, msg: withRef({ type: "delete" as const, id }, ref) };
}

/** One of this module's text commands (`command` without its slash), or undefined. */
export function parseCommunityText(
  command: string,
  arg: string,
  maxBytes: number,
): CommandParsed | undefined {
  const words = arg.trim().split(/\s+/).filter(Boolean);
  if (ACTIONS.has(command)) {
    const action = command as Action;
    if (words.length === 0) return fail("bad_message", `usage: ${USAGE[action]}`);
    const [target, ...rest] = words as [string, ...string[]];
    let duration: string | undefined;
    // A word shaped like a duration is one (a bad one is an error, not the start of a reason).
    if ((action === "mute" || action === "ban") && rest[0] && /^-?\d+[smhd]$/.test(rest[0])) {
      duration = rest.shift();
    }
    if (action === "unmute" || action === "unban") rest.length = 0;
    return moderation(
      action,
      target,
      duration,
      rest.length ? rest.join(" ") : undefined,
      undefined,
    );
  }
  if (command === "topic") {
    // `/topic` shows it, `/topic -` clears it, anything else sets it.
    const text = arg.trim();
    return topic(text === "" ? undefined : text === "-" ? "" : text, undefined);
  }
  if (command === "delete") return deletion(arg, undefined);
  if (command === "msg" || command === "query" || command === "tell") {
    const space = arg.trim().search(/\s/);
    if (space === -1) return fail("bad_message", `usage: ${USAGE.msg}`);
    const trimmed = arg.trim();
    return privately(trimmed.slice(0, space), trimmed.slice(space + 1), maxBytes, undefined);
  }
  return undefined;
}

/** One of this module's JSON requests (by `type`), or undefined. */
export function parseCommunityJson(
  obj: Record<string, unknown>,
  ref: Ref | undefined,
  maxBytes: number,
): CommandParsed | undefined {
  const type = obj.type as string;
  const string = (key: string) => typeof obj[key] === "string" ? obj[key] as string : undefined;
  const needs = (key: string) => fail("bad_message", `'${type}' needs a string field '${key}'`);
  if (ACTIONS.has(type)) {
    const target = string("name") ?? string("address");
    if (target === undefined) return needs("name");
    let duration = string("duration");
    if (typeof obj.duration === "number" && Number.isSafeInteger(obj.duration)) {
      // Seconds, in the largest unit that holds them exactly (a duration has at most 6 digits).
      const n = obj.duration;
      duration = n > 0 && n % 86_400 === 0
        ? `${n / 86_400}d`
        : n > 0 && n % 3600 === 0
        ? `${n / 3600}h`
        : n > 0 && n % 60 === 0
        ? `${n / 60}m`
        : `${n}s`;
    }
    if (obj.duration !== undefined && duration === undefined) {
      return fail("bad_message", "'duration' must be seconds or a string such as 10m");
    }
    return moderation(type as Action, target, duration, string("reason"), ref);
  }
  if (type === "topic") {
    if (obj.topic !== undefined && typeof obj.topic !== "string") return needs("topic");
    return topic(string("topic"), ref);
  }
  if (type === "delete") return deletion(obj.id, ref);
  if (type === "msg") {
    const to = string("to");
    const text = string("text");
    if (to === undefined) return needs("to");
    if (text === undefined) return needs("text");
    return privately(to, text, maxBytes, ref);
  }
  return undefined;
}
