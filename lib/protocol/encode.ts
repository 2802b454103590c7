/**
 * Encoding: one {@link ServerEvent} to one frame, for each format. Done once per format per
 * broadcast, never once per recipient.
 */

import type { Action, ChatMessage, ServerEvent } from "./protocol.ts";
import { NAME_RULE } from "./text.ts";

/** Encodes an event for `natter.v1` clients: one JSON object. */
export function encodeJson(event: ServerEvent): string {
  return JSON.stringify(event);
}

/** Names a plain-text list shows before "and N more". */
export const LISTED_NAMES = 20;

function nameList(names: string[], total = names.length): string {
  const shown = names.slice(0, LISTED_NAMES);
  if (total <= shown.length) return shown.join(", ");
  return `${shown.join(", ")} and ${total - shown.length} more`;
}

/**
 * Encodes an event for plain-text clients: readable lines whose first characters tell
 * who speaks. `name: ` is a chat line, `~ ` an action, `* ` the server, `! ` an error.
 */
export function encodeText(event: ServerEvent): string | null {
  switch (event.type) {
    case "message":
      if (event.deleted) return `* message ${event.id} by ${event.from} was deleted`;
      return event.action ? `~ ${event.from} ${event.text}` : `${event.from}: ${event.text}`;
    case "joined":
      return `* ${event.name} joined`;
    case "left":
      return `* ${event.name} left`;
    case "renamed":
      return `* ${event.from} is now ${event.to}`;
    case "welcome": {
      const others = event.members.filter((name) => name !== event.name);
      const total = (event.count ?? event.members.length) - 1;
      const company = total === 0
        ? "nobody else is here yet"
        : `also here: ${nameList(others, total)}`;
      const topic = event.topic ? `\n* topic: ${event.topic}` : "";
      return `* you are ${event.name} in #${event.room}; ${company}. Type /help for commands.${topic}`;
    }
    case "members":
      return `* ${event.members.length} in #${event.room}: ${nameList(event.members)}`;
    case "error":
    case "unknown":
      return `! ${event.message}`;
    case "notice":
      return event.text;
    case "history":
      return historyLines(event.room, event.messages);
    case "rooms": {
      if (event.rooms.length === 0) return "* no rooms";
      const list = event.rooms.map(({ room, members }) => `${room} (${members})`);
      return `* ${event.rooms.length} ${event.rooms.length === 1 ? "room" : "rooms"}: ${
        nameList(list)
      }`;
    }
    case "typing":
      return null; // too chatty for a terminal
    case "moderated": {
      const span = event.until === undefined ? "" : ` for ${spanOf(event.until - event.ts)}`;
      const why = event.reason ? `: ${event.reason}` : "";
      return `* ${event.by} ${VERBS[event.action]} ${event.name}${span}${why}`;
    }
    case "topic":
      if (event.by !== undefined) {
        return event.topic === ""
          ? `* ${event.by} cleared the topic of #${event.room}`
          : `* ${event.by} set the topic of #${event.room}: ${event.topic}`;
      }
      return `* topic of #${event.room}: ${event.topic === "" ? "(none)" : event.topic}`;
    case "deleted":
      return `* ${event.by} deleted message ${event.id}`;
    case "private":
      return `[private] ${event.from} -> ${event.to}: ${event.text}`;
    case "presence": {
      const parts = [];
      if (event.joinedCount > 0) parts.push(`${event.joinedCount} joined`);
      if (event.leftCount > 0) parts.push(`${event.leftCount} left`);
      return `* ${parts.join(", ")}; ${event.count} here now`;
    }
  }
}

const VERBS: Record<Action, string> = {
  kick: "removed",
  mute: "muted",
  unmute: "unmuted",
  ban: "banned",
  unban: "unbanned",
};

/** A span of time as people say it: `90s`, `10m`, `2h`, `7d` (rounded). */
function spanOf(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  for (const [unit, size] of [["d", 86_400], ["h", 3600], ["m", 60]] as const) {
    if (s % size === 0) return `${s / size}${unit}`;
  }
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

function clock(ts: number): string {
  return new Date(ts).toISOString().slice(11, 16);
}

/** Past messages as readable lines, each with its UTC time so that none passes for a live one. */
function historyLines(room: string, messages: ChatMessage[]): string {
  if (messages.length === 0) return `* no history in #${room} yet`;
  const lines = messages.map((m) =>
    m.deleted
      ? `[${clock(m.ts)}Z] * message ${m.id} by ${m.from} was deleted`
      : m.action
      ? `[${clock(m.ts)}Z] ~ ${m.from} ${m.text}`
      : `[${clock(m.ts)}Z] ${m.from}: ${m.text}`
  );
  return [`* last ${messages.length} in #${room}:`, ...lines, "* end of history"].join("\n");
}

/** The text clients' `/help`. */
export const HELP = [
  "* commands:",
  `*   /nick NAME   change your name (${NAME_RULE}); also /name`,
  "*   /join ROOM   move to another room",
  "*   /who         list who is in this room; also /names",
  "*   /history [N] the last N messages here (default 20)",
  "*   /rooms       rooms with people in them",
  "*   /me ACTION   describe what you do, shown as: ~ yourname ACTION",
  "*   /msg NAME TEXT  a private message to NAME in this room; also /tell",
  "*   /topic [TEXT]   show the room's topic, or set it (moderators; /topic - clears it)",
  "*   /token TOKEN renew your signed token before it expires (where the server uses them)",
  "* moderators: /kick NAME [reason], /mute NAME [10m] [reason], /unmute NAME, /delete ID;",
  "*   admins also /ban NAME|ADDRESS [7d] [reason], /unban NAME|ADDRESS",
  "*   /help        this list",
  "*   /quit        disconnect",
  "*   //text       send a line that starts with /",
  "* anything else is a message to everyone in the room.",
].join("\n");
