/**
 * Rules for user-supplied text: chat lines, names and room names.
 *
 * Everything a user types passes through here once, on the way in, so that every
 * client — a terminal, a REPL or the page — receives text that cannot forge a line,
 * move a cursor or reorder what is shown around it.
 *
 * Names are also kept from passing for one another: {@link checkName} refuses what renders
 * as nothing, and {@link nameKey}, under which a room files its members, folds case, width
 * and look-alike letters (Cyrillic `а` for Latin `a`, per Unicode's confusables data,
 * UTS #39), so that a name that looks like a present one is suffixed or refused.
 */

// Unicode's confusables.txt (UTS #39 §4) as a { character: prototype } table, as the
// unhomoglyph package ships it (its data.json, confusables.txt 13.0.0; see docs/ARCHITECTURE.md).
import confusables from "unhomoglyph/data.json" with { type: "json" };

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
/** The same, to ask whether there is any (most text has none, and a test is half a replace). */
// deno-lint-ignore no-control-regex -- as above
const ANY_UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

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
  const wellFormed = text.toWellFormed();
  return ANY_UNSAFE.test(wellFormed) ? wellFormed.replace(UNSAFE, replacement) : wellFormed;
}

/** Shortens and sanitizes user input for quoting it back inside an error message. */
export function quote(text: string, max = 40): string {
  const chars = [...text];
  const cut = chars.length > max ? chars.slice(0, max).join("") + "…" : text;
  return JSON.stringify(sanitize(cut));
}

/**
 * Each character's final prototype for {@link nameKey}: the UTS #39 table, plus what folding
 * case first needs (see there), settled so that a prototype maps to itself. Built from the
 * table alone, once, on the first call (some 30 ms; about 6,400 entries), not at start-up.
 */
let prototypeTable: ReadonlyMap<string, string> | undefined;

/** Printable ASCII, which normalization leaves as it is (see {@link nameKey}). */
const ASCII = /^[ -~]*$/;

function prototypes(table: Record<string, string>): Map<string, string> {
  const map = new Map<string, string>();
  for (const char in table) map.set(char, table[char]!);
  // The skeleton of UTS #39 §4: NFD, each code point replaced by its prototype, NFD again.
  const skeleton = (text: string) => {
    let out = "";
    for (const char of text.normalize("NFD")) out += map.get(char) ?? char;
    return out.normalize("NFD");
  };
  const latin = /^[!-~]+$/; // prototypes made of printable ASCII: a, rn, 3, 'b
  // A lowercase letter that looks like no Latin letter, while its capital does (Cyrillic т
  // and Т, which looks like T), takes its capital's prototype, lowercased.
  const capitals: [string, string][] = [];
  for (const capital of map.keys()) {
    const small = capital.toLowerCase();
    if (small === capital || small.toUpperCase() !== capital || [...small].length !== 1) continue;
    const looks = skeleton(capital).toLowerCase();
    if (latin.test(looks) && !latin.test(skeleton(small))) capitals.push([small, looks]);
  }
  for (const [small, looks] of capitals) map.set(small, looks);
  // Lowercase and map again until nothing changes (0 is O, which is o).
  const settle = (prototype: string) => {
    let text = prototype;
    for (let round = 0; round < 8; round++) {
      const next = skeleton(text.toLowerCase());
      if (next === text) return text;
      text = next;
    }
    throw new Error(`confusables: ${JSON.stringify(prototype)} does not settle`);
  };
  const settled = new Map<string, string>();
  for (const [char, prototype] of map) settled.set(char, settle(prototype));
  return settled;
}

/**
 * The key under which a name is unique in a room: two names with one key clash (the
 * second is suffixed, or refused by /nick). Case and width are folded (NFKC, lowercase), then
 * look-alikes (the UTS #39 skeleton, from Unicode's confusables data): `Alice`, `ALICE`,
 * `ａｌｉｃｅ`, `аlice` (Cyrillic а), `αlice` (Greek α) and `a1ice` share one key, as do `Tom`
 * and `Тom` (Cyrillic Т), and `mike` and `rnike`. A key is for comparing, never for showing.
 *
 * UTS #39 maps text as typed, where a capital and its lowercase may look like different
 * letters: capital I like l, i not. Here case is folded first, so that case never separates
 * two names (as before: `Alice` and `alice` are one name in every script), and what that
 * would miss is put back from the table itself: a lowercase letter that looks like no Latin
 * letter while its capital does (Cyrillic т, н, в, к, м; Greek η, τ, κ) stands for its
 * capital's prototype, and case is folded again after mapping (`0` is `O`, so `o`). Where a
 * capital and its lowercase look like two different Latin letters, the lowercase wins:
 * `Ian`/`lan` (I, l) and `Νick`/`Nick` (Greek Ν, whose ν looks like v) are different keys.
 *
 * Cheap enough for every join, rename and leave: three normalizations and one map lookup
 * per code point of at most {@link MAX_NAME} characters (none of the normalizations for an
 * ASCII name), and no cache of names.
 */
export function nameKey(name: string): string {
  const table = prototypeTable ??= prototypes(confusables);
  let key = "";
  if (ASCII.test(name)) {
    // Most names (every guest's): NFKC and NFD leave ASCII as it is, so only case and the
    // table apply, and a key that stays ASCII needs no last normalization either.
    for (const char of name.toLowerCase()) key += table.get(char) ?? char;
    return ASCII.test(key) ? key : key.normalize("NFD");
  }
  for (const char of name.normalize("NFKC").toLowerCase().normalize("NFD")) {
    key += table.get(char) ?? char;
  }
  return key.normalize("NFD");
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
