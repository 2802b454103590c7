/**
 * What a new connection asks for (its query string: name, room, `since`, `epoch`), checked. A bad
 * name or room is replaced by the default and explained with an error; the connection stays.
 */

import type { ProtocolError } from "../protocol/protocol.ts";
import { checkName, checkRoom, MAX_NAME, NAME_RULE, quote, ROOM_RULE } from "../protocol/text.ts";

/** A member's standing: what moderation it may do (lib/chat/moderation.ts). */
export type Role = "user" | "moderator" | "admin";

/**
 * Who a verified member is: the claims of the signed token it connected with
 * (lib/transport/identity.ts checked it). Its name is its own: no guest can take it, and it
 * changes with `/nick` only where the token says so.
 */
export interface Identity {
  /** The user's id at the token's issuer. */
  sub: string;
  /** Its display name (checked against the name rule). */
  name: string;
  role: Role;
  /** Rooms it may join: names, or prefixes ending in `*`; undefined: every room. */
  rooms: string[] | undefined;
  /** Whether `/nick` is allowed. */
  nick: boolean;
  /** When the token expires, in seconds since the epoch. */
  exp: number;
}

/**
 * The mark a guest's name carries where the server verifies identities: no name a person can
 * ask for starts with it (see NAME_RULE), so a guest never shows as a verified user, nor as a
 * look-alike of one, in the page, in text lines or in history.
 */
export const GUEST_MARK = "~";

/** A guest's name: the mark, then the name it asked for (shortened to fit). */
export function guestName(name: string): string {
  return GUEST_MARK + [...name].slice(0, MAX_NAME - 1).join("");
}

/** Whether a verified member may be in `room` (its token's rooms claim). */
export function roomAllowed(identity: Identity | undefined, room: string): boolean {
  if (identity?.rooms === undefined) return true;
  return identity.rooms.some((pattern) =>
    pattern.endsWith("*") ? room.startsWith(pattern.slice(0, -1)) : room === pattern
  );
}

/** What a new connection asks for: its query string, and its remote port for the default name. */
export interface JoinRequest {
  name?: string | null;
  room?: string | null;
  /** The last message id the client saw in the room (its `?since=`), to recover what it missed. */
  since?: number | string | null;
  /** The epoch the client's `since` belongs to (`?epoch=`); another one makes `since` meaningless here. */
  epoch?: string | null;
  /** The page's tab (`?session=`), for the reload grace (lib/chat/linger.ts). */
  session?: string | null;
  port?: number;
  /** Who it is, when it came with a verified token: its name is the token's. */
  identity?: Identity | undefined;
  /** It came without a token to a server that verifies identities: its name is marked. */
  guest?: boolean;
}

/** A join request as the hub carries it out. */
export interface Join {
  room: string;
  name: string;
  /** Where recovery starts; -1 when the client's `since` is from another epoch (nothing to recover). */
  since: number | undefined;
  /** What was wrong with the request, for the member to read after its welcome. */
  errors: ProtocolError[];
}

/** Checks a request against the rules for names and rooms, and the store's current `epoch`. */
export function checkJoin(
  request: JoinRequest,
  defaultRoom: string,
  defaultName: string,
  epoch: string,
): Join {
  const errors: ProtocolError[] = [];
  let room = defaultRoom;
  if (request.room) {
    const checked = checkRoom(request.room);
    if (checked) room = checked;
    else {
      const message = `room ${quote(request.room)} is not allowed: use ${ROOM_RULE}; ` +
        `you are in #${room}`;
      errors.push({ code: "bad_room", message });
    }
  }
  let name = defaultName;
  if (request.identity) name = request.identity.name;
  else if (request.name) {
    // A guest's page asks again for the name it was given, mark and all.
    const asked = request.guest && request.name.startsWith(GUEST_MARK)
      ? request.name.slice(GUEST_MARK.length)
      : request.name;
    const checked = checkName(asked);
    if (checked) name = checked;
    else {
      const message = `name ${quote(request.name)} is not allowed: use ${NAME_RULE}`;
      errors.push({ code: "bad_name", message });
    }
  }
  let since = request.since == null || request.since === "" ? undefined : Number(request.since);
  if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) {
    errors.push({
      code: "bad_message",
      message: `since must be a message id (0 or more), got ${quote(String(request.since))}`,
    });
    since = undefined;
  }
  // An id from another id space recovers nothing; -1 makes the store say so.
  if (since !== undefined && request.epoch != null && request.epoch !== epoch) since = -1;
  if (request.guest) name = guestName(name);
  return { room, name, since, errors };
}
