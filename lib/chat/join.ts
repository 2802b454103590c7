/**
 * What a new connection asks for (its query string: name, room, `since`, `epoch`), checked. A bad
 * name or room is replaced by the default and explained with an error; the connection stays.
 */

import type { ProtocolError } from "../protocol/protocol.ts";
import { checkName, checkRoom, NAME_RULE, quote, ROOM_RULE } from "../protocol/text.ts";

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
  if (request.name) {
    const checked = checkName(request.name);
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
  return { room, name, since, errors };
}
