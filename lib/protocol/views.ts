/**
 * What each kind of client receives, in one place. A plain-text client (a REPL, a terminal) gets
 * readable lines, no acknowledgements and no history replay, as the seed had it; a JSON client
 * (`natter.v1`: the page, apps) gets every event as an object, its own messages back as
 * acknowledgements, and history with its welcome. The hub asks a member's view; it never
 * branches on the format itself. A new format, or a v2, is a new view here and in encode.ts.
 */

import { encodeJson, encodeText, LISTED_NAMES } from "./encode.ts";
import type { Format, ServerEvent } from "./protocol.ts";

export interface View {
  readonly format: Format;
  /** Whether its own messages come back to it (with its `ref`) as acknowledgements. */
  readonly acks: boolean;
  /** Whether its welcome carries history, so that a new epoch calls for a new welcome. */
  readonly replays: boolean;
  /** Names its welcome lists, in a room that lists at most `most`. */
  listed(most: number): number;
  /** A notice from the server, as it shows it. */
  notice(text: string): string;
  /** One event as one frame's text, or null for an event it does not show. */
  encode(event: ServerEvent): string | null;
}

const TEXT: View = {
  format: "text",
  acks: false,
  replays: false,
  // One of those read may be the member itself, whom the line leaves out.
  listed: (most) => Math.min(most, LISTED_NAMES + 1),
  notice: (text) => `* ${text}`,
  encode: encodeText,
};

const JSON_VIEW: View = {
  format: "json",
  acks: true,
  replays: true,
  listed: (most) => most,
  notice: (text) => text,
  encode: encodeJson,
};

/** The view of each format. */
export const VIEWS: Readonly<Record<Format, View>> = { text: TEXT, json: JSON_VIEW };
