/**
 * Rules for user-supplied text: chat lines, names and room names.
 *
 * Everything a user types passes through here once, on the way in, so that every
 * client — a terminal, a REPL or the page — receives text that cannot forge a line,
 * move a cursor or reorder what is shown around it.
 */

/** Longest name, in characters. */
export const MAX_NAME = 24;
/** Longest room name, in characters. */
export const MAX_ROOM = 32;

// A letter, digit or - _ . followed by at most two combining marks (Hindi needs them;
// a tower of marks is noise). The length is counted separately, in code points.
const UNIT = "[\\p{L}\\p{N}_.-]\\p{M}{0,2}";
const NAME = new RegExp(`^(?:${UNIT})+$`, "u");
const ROOM = NAME;
// What renders as nothing and so could make two names look alike: the Unicode property
// Default_Ignorable_Code_Point (Hangul fillers, joiners, U+034F, Mongolian and other variation
// selectors up to U+E01EF, tags, …), from the runtime's own Unicode data, not a hand list.
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Variation_Selector}]/u;

function fits(text: string, pattern: RegExp, max: number): boolean {
  const length = [...text].length;
  return length >= 1 && length <= max && pattern.test(text) && !INVISIBLE.test(text);
}

// C0 and C1 controls, DEL, line/paragraph separators, and the bidi embeddings,
// overrides and isolates that can visually reorder a line ("Trojan Source").
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function replacement(char: string): string {
  const code = char.charCodeAt(0);
  if (code === 0x09) return " ";
  // C0 controls become their visible "control picture" (ESC -> ␛, LF -> ␊).
  if (code < 0x20) return String.fromCharCode(0x2400 + code);
  if (code === 0x7f) return "\u2421";
  return "\ufffd";
}

/**
 * Makes user text safe to show on one line anywhere: control characters become visible
 * symbols (newline -> ␊, ESC -> ␛), tab becomes a space, lone surrogates and
 * reordering marks become U+FFFD.
 */
export function sanitize(text: string): string {
  return text.toWellFormed().replace(UNSAFE, replacement);
}

/** Shortens and sanitizes user input for quoting it back inside an error message. */
export function quote(text: string, max = 40): string {
  const chars = [...text];
  const cut = chars.length > max ? chars.slice(0, max).join("") + "…" : text;
  return JSON.stringify(sanitize(cut));
}

/** The key under which a name is unique in a room: case and width folded. */
export function nameKey(name: string): string {
  return name.normalize("NFKC").toLowerCase();
}

/** A validated name (NFC-normalized), or null when it breaks the rule in {@link NAME_RULE}. */
export function checkName(name: string): string | null {
  const normal = name.normalize("NFC");
  return fits(normal, NAME, MAX_NAME) ? normal : null;
}

/** What a valid name looks like, for error messages and help. */
export const NAME_RULE = `1-${MAX_NAME} letters of any script, digits, '-', '_' or '.'`;

/**
 * A validated, canonical room name (lowercase, a leading '#' dropped), or null when it
 * breaks {@link ROOM_RULE}. Rooms are case-insensitive so that links and typing agree.
 */
export function checkRoom(room: string): string | null {
  const normal = room.replace(/^#/, "").normalize("NFKC").toLowerCase().normalize("NFC");
  return fits(normal, ROOM, MAX_ROOM) ? normal : null;
}

/** What a valid room name looks like, for error messages and help. */
export const ROOM_RULE = `1-${MAX_ROOM} letters, digits, '-', '_' or '.' (an optional leading '#')`;
