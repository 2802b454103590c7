import assert from "node:assert/strict";
import { encodeJson, encodeText } from "../lib/protocol/encode.ts";
import { parseJson, parseText, refIn, utf8Length } from "../lib/protocol/protocol.ts";
import type { ServerEvent } from "../lib/protocol/protocol.ts";

Deno.test("utf8Length() counts what TextEncoder writes, short or long, lone surrogates included", () => {
  const pieces = ["a", "é", "€", "😀", "\ud800", "\udc00", "\ud800x", "x\udfff", "\n"];
  const samples = [""];
  // Short strings (counted in JavaScript) and long ones (counted by the runtime's encoder).
  for (const length of [1, 5, 47, 48, 49, 200, 9000]) {
    for (const piece of pieces) samples.push(piece.repeat(Math.ceil(length / piece.length)));
    samples.push(Array.from({ length }, (_, i) => pieces[i % pieces.length]).join(""));
  }
  const encoder = new TextEncoder();
  for (const text of samples) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text.slice(0, 20)));
  }
});

Deno.test("parseText() reads a plain line as a message, keeping it word for word", () => {
  assert.deepEqual(parseText("Your message here.."), {
    ok: true,
    msg: { type: "say", text: "Your message here.." },
  });
  assert.deepEqual(parseText("trailing newline\n"), {
    ok: true,
    msg: { type: "say", text: "trailing newline" },
  });
  assert.deepEqual(parseText("a CRLF line\r\n"), {
    ok: true,
    msg: { type: "say", text: "a CRLF line" },
  });
  assert.deepEqual(parseText("two newlines\n\n"), {
    ok: true,
    msg: { type: "say", text: "two newlines␊" },
  }, "only one trailing newline is the line's end");
  assert.deepEqual(parseText(" \t\n").ok, false, "white space alone is empty");
  assert.deepEqual(parseText("\u00a0x").ok, true, "a line may start with a non-ASCII space");
  assert.deepEqual(parseText("//etc/passwd is a path"), {
    ok: true,
    msg: { type: "say", text: "/etc/passwd is a path" },
  });
});

Deno.test("parseText() reads the commands", () => {
  assert.deepEqual(parseText("/nick robert"), { ok: true, msg: { type: "nick", name: "robert" } });
  assert.deepEqual(parseText("/NAME  robert "), {
    ok: true,
    msg: { type: "nick", name: "robert" },
  });
  assert.deepEqual(parseText("/join #Dev"), { ok: true, msg: { type: "join", room: "dev" } });
  assert.deepEqual(parseText("/who"), { ok: true, msg: { type: "who" } });
  assert.deepEqual(parseText("/me waves hello"), {
    ok: true,
    msg: { type: "me", text: "waves hello" },
  });
  assert.deepEqual(parseText("/help"), { ok: true, msg: { type: "help" } });
  assert.deepEqual(parseText("/quit"), { ok: true, msg: { type: "quit" } });
});

Deno.test("parseText() refuses bad commands, names and rooms with an error that says what is allowed", () => {
  const unknown = parseText("/dance");
  assert.equal(unknown.ok, false);
  if (!unknown.ok) {
    assert.equal(unknown.error.code, "unknown_command");
    assert.match(unknown.error.message, /\/help/);
  }
  const badName = parseText("/nick a b");
  assert.equal(!badName.ok && badName.error.code, "bad_name");
  assert.match(!badName.ok ? badName.error.message : "", /1-24 letters of any script, digits/);
  assert.equal(!parseText("/nick " + "x".repeat(25)).ok, true);
  const noName = parseText("/nick");
  assert.equal(
    !noName.ok && noName.error.message,
    "a name is needed: use 1-24 letters of any script, digits, '-', '_' or '.'",
  );
  assert.deepEqual(parseText("/me   waves"), { ok: true, msg: { type: "me", text: "waves" } });
  const badRoom = parseText("/join ../etc");
  assert.equal(!badRoom.ok && badRoom.error.code, "bad_room");
  const empty = parseText("   ");
  assert.equal(!empty.ok && empty.error.code, "empty");
  const emptyMe = parseText("/me ");
  assert.equal(!emptyMe.ok && emptyMe.error.code, "empty");
});

Deno.test("parseText() and parseJson() refuse frames over the size cap, counting UTF-8 bytes", () => {
  assert.equal(parseText("a".repeat(100), 100).ok, true);
  const ascii = parseText("a".repeat(101), 100);
  assert.equal(!ascii.ok && ascii.error.code, "too_long");
  const wide = parseText("é".repeat(51), 100); // 102 bytes in 51 characters
  assert.equal(!wide.ok && wide.error.code, "too_long");
  assert.equal(parseText("😀".repeat(25), 100).ok, true); // exactly 100 bytes
  const json = parseJson(JSON.stringify({ type: "say", text: "x".repeat(200) }), 100);
  assert.equal(!json.ok && json.error.code, "too_long");
});

Deno.test("parseText() makes control characters visible so a line cannot forge another", () => {
  const parsed = parseText("hi\n* bob left\x1b[31m\u202eevil");
  assert.deepEqual(parsed, {
    ok: true,
    msg: { type: "say", text: "hi␊* bob left␛[31m\ufffdevil" },
  });
});

Deno.test("parseJson() accepts each request type with an optional ref", () => {
  assert.deepEqual(parseJson('{"type":"say","text":"hi","ref":"a1"}'), {
    ok: true,
    msg: { type: "say", text: "hi", ref: "a1" },
  });
  assert.deepEqual(parseJson('{"type":"me","text":"waves"}'), {
    ok: true,
    msg: { type: "me", text: "waves" },
  });
  assert.deepEqual(parseJson('{"type":"nick","name":"zoë","ref":2}'), {
    ok: true,
    msg: { type: "nick", name: "zoë", ref: 2 },
  });
  assert.deepEqual(parseJson('{"type":"join","room":"Dev"}'), {
    ok: true,
    msg: { type: "join", room: "dev" },
  });
  assert.deepEqual(parseJson('{"type":"who","future":"ignored"}'), {
    ok: true,
    msg: { type: "who" },
  });
});

Deno.test("parseJson() explains malformed JSON, unknown types, missing fields and bad refs", () => {
  const cases: [string, string][] = [
    ["{not json", "bad_json"],
    ["42", "bad_message"],
    ["null", "bad_message"],
    ['["say"]', "bad_message"],
    ['{"text":"no type"}', "bad_message"],
    ['{"type":"dance"}', "unknown_type"],
    ['{"type":"help"}', "unknown_type"],
    ['{"type":"say"}', "bad_message"],
    ['{"type":"say","text":42}', "bad_message"],
    ['{"type":"nick"}', "bad_message"],
    ['{"type":"nick","name":"a b"}', "bad_name"],
    ['{"type":"join","room":""}', "bad_room"],
    [`{"type":"say","text":"x","ref":"${"r".repeat(65)}"}`, "bad_message"],
    ['{"type":"say","text":"x","ref":{}}', "bad_message"],
  ];
  for (const [frame, code] of cases) {
    const parsed = parseJson(frame);
    assert.equal(parsed.ok, false, frame);
    if (!parsed.ok) {
      assert.equal(parsed.error.code, code, frame);
      assert.ok(parsed.error.message.length > 10, `a readable message for ${frame}`);
    }
  }
});

Deno.test("parseJson() echoes the ref on errors it can attribute", () => {
  const parsed = parseJson('{"type":"say","ref":"x7"}');
  assert.deepEqual(parsed, {
    ok: false,
    error: { code: "bad_message", message: "'say' needs a string field 'text'", ref: "x7" },
  });
});

Deno.test("encodeText() writes one readable line per event, first characters telling who speaks", () => {
  const ts = 0;
  const cases: [ServerEvent, string][] = [
    [{ type: "message", room: "r", id: 1, ts, from: "alice", text: "hello" }, "alice: hello"],
    [
      { type: "message", room: "r", id: 2, ts, from: "alice", text: "waves", action: true },
      "~ alice waves",
    ],
    [{ type: "joined", room: "r", name: "bob", ts }, "* bob joined"],
    [{ type: "left", room: "r", name: "bob", ts }, "* bob left"],
    [{ type: "renamed", room: "r", from: "bob", to: "robert", ts }, "* bob is now robert"],
    [{ type: "members", room: "r", members: ["a", "b"] }, "* 2 in #r: a, b"],
    [{ type: "error", code: "empty", message: "message is empty" }, "! message is empty"],
    [
      { type: "welcome", protocol: "text", server: "s", name: "a", room: "r", members: ["a"] },
      "* you are a in #r; nobody else is here yet. Type /help for commands.",
    ],
  ];
  for (const [event, line] of cases) assert.equal(encodeText(event), line);
});

Deno.test("encodeText() shortens a long member list", () => {
  const members = Array.from({ length: 25 }, (_, i) => `m${i}`);
  const line = encodeText({ type: "members", room: "big", members });
  assert.match(line ?? "", /^\* 25 in #big: m0, m1, .*m19 and 5 more$/);
});

Deno.test("encodeJson() writes one JSON object with no newline in it", () => {
  const event: ServerEvent = {
    type: "message",
    room: "r",
    id: 1,
    ts: 5,
    from: "a",
    text: "line␊two",
    ref: "q",
  };
  const encoded = encodeJson(event);
  assert.equal(encoded.includes("\n"), false);
  assert.deepEqual(JSON.parse(encoded), event);
});

Deno.test("refIn() finds the ref of a frame refused unparsed, at its start or end, and nothing else", () => {
  assert.equal(refIn('{"type":"say","text":"hi","ref":"7","key":"k"}'), "7");
  assert.equal(refIn('{"ref":12,"type":"say","text":"hi"}'), 12);
  const long = JSON.stringify({ type: "say", text: "x".repeat(20_000), ref: "r-9", key: "k" });
  assert.equal(refIn(long), "r-9");
  assert.equal(
    refIn(JSON.stringify({ type: "say", text: `"ref":"inside" ${"y".repeat(2000)}` })),
    undefined,
  );
  assert.equal(refIn('{"type":"say","text":"no ref"}'), undefined);
  const tooLong = parseJson(long, 16384);
  assert.deepEqual(
    tooLong.ok ? undefined : tooLong.error.ref,
    "r-9",
    "a too-long message names its ref",
  );
});
