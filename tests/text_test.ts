import assert from "node:assert/strict";
import { checkName, checkRoom, nameKey, quote, sanitize } from "../lib/text.ts";

Deno.test("sanitize() shows control characters as symbols and leaves ordinary text alone", () => {
  assert.equal(
    sanitize("plain text, ünïcödé, 漢字, emoji 😀"),
    "plain text, ünïcödé, 漢字, emoji 😀",
  );
  assert.equal(sanitize("a\nb\r\nc"), "a␊b␍␊c");
  assert.equal(sanitize("\x1b[2J\x07"), "␛[2J␇");
  assert.equal(sanitize("tab\there"), "tab here");
  assert.equal(sanitize("del\x7f c1\x85"), "del␡ c1\ufffd");
});

Deno.test("sanitize() removes bidi overrides, line separators and lone surrogates", () => {
  assert.equal(sanitize("a\u202eb\u2066c\u2028d"), "a\ufffdb\ufffdc\ufffdd");
  assert.equal(sanitize("x\ud800y"), "x\ufffdy");
  assert.equal(
    sanitize("rtl \u200f mark"),
    "rtl \u200f mark",
    "plain direction marks are legitimate",
  );
});

Deno.test("checkName() allows letters, digits, - _ . up to 24 characters", () => {
  assert.equal(checkName("alice"), "alice");
  assert.equal(checkName("Zoë_2.0-beta"), "Zoë_2.0-beta");
  assert.equal(checkName("Zoe\u0308"), "Zoë", "normalized to NFC");
  assert.equal(checkName("x".repeat(24)), "x".repeat(24));
  for (const bad of ["", "x".repeat(25), "a b", "a:b", "<img>", "*", "a\nb", "bob\u202e"]) {
    assert.equal(checkName(bad), null, JSON.stringify(bad));
  }
});

Deno.test("checkRoom() is case-insensitive and drops a leading #", () => {
  assert.equal(checkRoom("Lobby"), "lobby");
  assert.equal(checkRoom("#dev-ops"), "dev-ops");
  for (const bad of ["", "#", "a/b", "x".repeat(33), "two words"]) {
    assert.equal(checkRoom(bad), null, JSON.stringify(bad));
  }
});

Deno.test("nameKey() folds case and width so look-alike names collide", () => {
  assert.equal(nameKey("Alice"), nameKey("aLICE"));
  assert.equal(nameKey("ａｌｉｃｅ"), nameKey("alice"));
});

Deno.test("quote() shortens and sanitizes what it quotes", () => {
  assert.equal(quote("a\nb"), '"a␊b"');
  assert.equal(quote("x".repeat(50), 10), `"${"x".repeat(10)}…"`);
});

Deno.test("checkName() takes scripts that need combining marks, and refuses invisible or piled-up ones", () => {
  assert.equal(checkName("हिंदी"), "हिंदी");
  assert.equal(checkName("x\u0301"), "x\u0301".normalize("NFC"));
  for (
    const bad of ["\u3164", "alice\u3164", "\u115f\u1160", "a\u0301\u0301\u0301\u0301", "\u0301a"]
  ) {
    assert.equal(checkName(bad), null, JSON.stringify(bad));
  }
});

Deno.test("checkRoom() accepts names whose lowercase needs a combining mark", () => {
  assert.equal(checkRoom("İstanbul"), "i̇stanbul");
});

Deno.test("checkName() refuses every default-ignorable code point and variation selector (look-alike names)", () => {
  // The marks that made "alice" + an invisible mark a second, identical-looking "alice".
  for (const mark of ["\ufe0f", "\ufe00", "\u034f", "\u180b", "\u180f", "\u{e0100}", "\u200b"]) {
    assert.equal(checkName(`alice${mark}`), null, `U+${mark.codePointAt(0)!.toString(16)}`);
    assert.equal(checkRoom(`dev${mark}`), null, `room with U+${mark.codePointAt(0)!.toString(16)}`);
  }
});
