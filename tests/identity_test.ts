/**
 * Verified identities (issue 17): signed tokens checked before the upgrade, the names they
 * carry, guests and their mark, the rooms claim, expiry and renewal, the public-key forms, and
 * the door's path in a real process.
 */

import assert from "node:assert/strict";
import { exportSPKI, generateKeyPair } from "jose";
import { parseCommand } from "../lib/ops/cli.ts";
import { ConfigError } from "../lib/ops/config.ts";
import {
  Client,
  MAIN,
  rawExchange,
  run,
  ServerProcess,
  signedToken,
  sleep,
  startServer,
  TEST_JWT_SECRET,
  upgradeRequest,
} from "./helpers.ts";

const SECRET = TEST_JWT_SECRET;
const token = signedToken;

const b64 = (value: unknown) =>
  btoa(JSON.stringify(value)).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");

/** The status line and body of an upgrade asked for with `path`. */
async function refusal(port: number, path: string): Promise<string> {
  return await rawExchange(port, upgradeRequest(path));
}

Deno.test("a signed token's name is the member's, whatever ?name= says; /nick is off unless the token allows it", async () => {
  const server = startServer({ jwtSecret: SECRET });
  try {
    const alice = await Client.open(server.ws(`/?name=mallory&token=${await token()}`));
    assert.match(alice.lines[0]!, /you are alice in #lobby/);
    alice.send("/nick bob");
    assert.match(await alice.next((l) => l.startsWith("!")), /comes with your token/);
    const carol = await Client.open(
      server.ws(`/?token=${await token({ sub: "u-carol", name: "carol", nick: true })}`),
    );
    carol.send("/nick caro");
    await carol.next((l) => l.includes("carol is now caro"));
    await alice.close();
    await carol.close();
  } finally {
    await server.close();
  }
});

Deno.test("forged, expired, early, alg none, wrong-algorithm and claimless tokens get 401 before the upgrade", async () => {
  const server = startServer({ jwtSecret: SECRET });
  const now = Math.floor(Date.now() / 1000);
  try {
    const cases: [string, string, RegExp][] = [
      [
        "forged",
        await token({}, { key: new TextEncoder().encode("another-secret-another-secret-00") }),
        /signature does not match/,
      ],
      ["expired", await token({ exp: now - 60 }), /expired/],
      ["not yet valid", await token({ nbf: now + 600 }), /not valid yet/],
      [
        "alg none",
        `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "u-x", name: "admin", exp: now + 60 })}.`,
        /algorithm this server does not accept|not a valid/,
      ],
      ["HS512", await token({}, { alg: "HS512" }), /algorithm this server does not accept/],
      ["no exp", await token({ exp: undefined }), /exp claim/],
      ["no sub", await token({ sub: undefined }), /sub claim/],
      ["bad role", await token({ role: "owner" }), /role must be/],
      ["bad name", await token({ name: "al ice" }), /is not a name/],
      ["garbage", "not-a-token-at-all", /not a valid signed JSON Web Token/],
    ];
    for (const [what, bad, reason] of cases) {
      const answer = await refusal(server.port, `/?token=${bad}`);
      assert.match(answer, /^HTTP\/1.1 401/, what);
      assert.match(answer, reason, what);
    }
    // Also through the other two places a token travels.
    const good = await token();
    const viaHeader = await rawExchange(
      server.port,
      upgradeRequest("/", { authorization: `Bearer ${good}` }),
    );
    assert.match(viaHeader, /^HTTP\/1.1 101/);
    const viaProtocol = await Client.open(server.ws("/"), ["natter.v1", `natter.token.${good}`]);
    const welcome = JSON.parse(viaProtocol.lines[0]!);
    assert.equal(welcome.name, "alice");
    await viaProtocol.close();
  } finally {
    await server.close();
  }
});

Deno.test("with signed tokens, guests are refused by default; with --guests yes they are marked ~ and never look like a user", async () => {
  const closed = startServer({ jwtSecret: SECRET });
  try {
    const answer = await refusal(closed.port, "/?name=alice");
    assert.match(answer, /^HTTP\/1.1 401/);
    assert.match(answer, /needs a signed token/);
    const auth = await (await fetch(closed.http("/auth"))).json();
    assert.deepEqual(auth, { required: true, accepted: false });
    const withToken = await (await fetch(closed.http(`/auth?token=${await token()}`))).json();
    assert.deepEqual(withToken, { required: true, accepted: true });
  } finally {
    await closed.close();
  }
  const open = startServer({ jwtSecret: SECRET, guests: true });
  try {
    const alice = await Client.open(open.ws(`/?token=${await token()}`));
    const guest = await Client.open(open.ws("/?name=alice"));
    assert.match(guest.lines[0]!, /you are ~alice in #lobby/);
    const lookalike = await Client.json(open.ws("/?name=%D0%B0lice")); // Cyrillic а
    // It looks like the guest ~alice, so it is told apart from that one too.
    assert.equal(JSON.parse(lookalike.lines[0]!).name, "~аlice-2");
    guest.send("/nick bob");
    await guest.next((l) => l.includes("~alice is now ~bob"));
    guest.send("hello from a guest");
    assert.equal(
      await alice.next((l) => l.includes("hello from a guest")),
      "~bob: hello from a guest",
    );
    // A page reconnecting asks for the name it was given, mark and all: it gets it back.
    const again = await Client.open(open.ws("/?name=~carol"));
    assert.match(again.lines[0]!, /you are ~carol in #lobby/);
    await again.close();
    const noName = await Client.open(open.ws("/"));
    assert.match(noName.lines[0]!, /you are ~guest-\d+/);
    await Promise.all([alice, guest, lookalike, noName].map((c) => c.close()));
  } finally {
    await open.close();
  }
});

Deno.test("a token's rooms claim: other rooms get 403 at the door and forbidden on /join; prefixes work", async () => {
  const server = startServer({ jwtSecret: SECRET });
  try {
    const limited = await token({ rooms: ["team-*", "lobby"] });
    const answer = await refusal(server.port, `/?room=secret&token=${limited}`);
    assert.match(answer, /^HTTP\/1.1 403/);
    assert.match(answer, /does not allow #secret; it allows #team-\*, #lobby/);
    const client = await Client.json(server.ws(`/?room=team-red&token=${limited}`));
    assert.equal(JSON.parse(client.lines[0]!).room, "team-red");
    client.send({ type: "join", room: "secret", ref: 1 });
    const refused = await client.event("error", (e) => e.ref === 1);
    assert.equal(refused.code, "forbidden");
    client.send({ type: "join", room: "lobby", ref: 2 });
    await client.event("welcome", (e) => e.room === "lobby");
    await client.close();
  } finally {
    await server.close();
  }
});

Deno.test("an expiring token closes its connection with 4003 unless renewed for the same user in time", async () => {
  const server = startServer({ jwtSecret: SECRET });
  try {
    const short = await Client.json(server.ws(`/?token=${await token({}, { ttl: 2 })}`));
    const renewed = await Client.json(
      server.ws(`/?token=${await token({ sub: "u-bob", name: "bob" }, { ttl: 2 })}`),
    );
    renewed.send({ type: "token", token: await token({ sub: "u-eve", name: "eve" }), ref: "x" });
    const wrong = await renewed.event("error", (e) => e.ref === "x");
    assert.equal(wrong.code, "bad_token");
    assert.match(String(wrong.message), /another user/);
    renewed.send({ type: "token", token: await token({ sub: "u-bob", name: "bob" }), ref: "y" });
    await renewed.event("notice", (e) => e.ref === "y" && /renewed/.test(String(e.text)));
    const closed = await short.closed;
    assert.equal(closed.code, 4003);
    assert.equal(closed.reason, "token expired");
    await sleep(500);
    assert.equal(renewed.socket.readyState, WebSocket.OPEN);
    renewed.send({ type: "say", text: "still here", ref: 3 });
    await renewed.event("message", (e) => e.ref === 3);
    await renewed.close();
  } finally {
    await server.close();
  }
});

Deno.test("a token that expires past the year 9999 is refused, at connect and as a renewal, and the server stays up", async () => {
  const server = startServer({ jwtSecret: SECRET });
  try {
    const far = await token({ exp: 8_641_796_272_081 });
    const answer = await refusal(server.port, `/?token=${far}`);
    assert.match(answer, /^HTTP\/1.1 401/);
    assert.match(answer, /too far in the future/);
    const alice = await Client.json(server.ws(`/?token=${await token()}`));
    alice.send({ type: "token", token: far, ref: 1 });
    assert.equal((await alice.event("error", (e) => e.ref === 1)).code, "bad_token");
    const again = await Client.json(server.ws(`/?token=${await token({ sub: "u-b", name: "b" })}`));
    await Promise.all([alice, again].map((c) => c.close()));
  } finally {
    await server.close();
  }
});

Deno.test("with signed tokens the handshake is checked in the documented order, and refused tokens are counted", async () => {
  const server = startServer({ jwtSecret: SECRET });
  try {
    const badKey = await rawExchange(
      server.port,
      upgradeRequest("/?token=garbage", { "sec-websocket-key": "short" }),
    );
    assert.match(badKey, /^HTTP\/1.1 400/);
    const oldVersion = await rawExchange(
      server.port,
      upgradeRequest("/", { "sec-websocket-version": "8" }),
    );
    assert.match(oldVersion, /^HTTP\/1.1 426/);
    const evil = await rawExchange(
      server.port,
      upgradeRequest("/", { origin: "https://evil.example" }),
    );
    assert.match(evil, /^HTTP\/1.1 403/);
    await refusal(server.port, "/?token=garbage");
    await refusal(server.port, `/?room=secret&token=${await token({ rooms: ["lobby"] })}`);
    const metrics = await (await fetch(server.http("/metrics"))).text();
    assert.match(metrics, /natter_refused_total\{reason="token"\} 1/);
    assert.match(metrics, /natter_refused_total\{reason="token_room"\} 1/);
  } finally {
    await server.close();
  }
});

Deno.test("--jwt-public-key takes ES256 and RS256 keys, and refuses an HS256 token signed with the public key", async () => {
  for (const alg of ["ES256", "RS256"] as const) {
    const { publicKey, privateKey } = await generateKeyPair(alg);
    const pem = await exportSPKI(publicKey);
    const server = startServer({ jwtPublicKey: pem });
    try {
      const client = await Client.open(
        server.ws(`/?token=${await token({}, { key: privateKey, alg })}`),
      );
      assert.match(client.lines[0]!, /you are alice/);
      await client.close();
      const confused = await token({}, { key: new TextEncoder().encode(pem), alg: "HS256" });
      const answer = await refusal(server.port, `/?token=${confused}`);
      assert.match(answer, /^HTTP\/1.1 401/, alg);
      const otherKey = (await generateKeyPair(alg)).privateKey;
      const wrongKey = await refusal(
        server.port,
        `/?token=${await token({}, { key: otherKey, alg })}`,
      );
      assert.match(wrongKey, /^HTTP\/1.1 401/, alg);
      assert.match(wrongKey, /signature does not match/, alg);
    } finally {
      await server.close();
    }
  }
});

Deno.test("the command line: JWT flags, their conflicts and bad values say what is wrong", async () => {
  const env = {
    env: () => undefined,
    readFile: (path: string) => `secret in ${path} 0123456789abcdef0123456789`,
  };
  const command = parseCommand(["--jwt-secret-file", "/s"], env);
  assert.equal(
    command.kind === "serve" && command.options.jwtSecret,
    "secret in /s 0123456789abcdef0123456789",
  );
  assert.throws(() => parseCommand(["--jwt-secret", "short"], env), /at least 32 bytes/);
  assert.throws(
    () => parseCommand(["--jwt-secret", SECRET, "--token", "abcdefgh"], env),
    (error: Error) =>
      error instanceof ConfigError && /--token and signed tokens/.test(error.message),
  );
  assert.throws(() => parseCommand(["--guests", "maybe"], env), /--guests must be yes or no/);
  assert.throws(
    () => parseCommand(["--guests", "no"], env),
    /--guests no needs --jwt-secret or --jwt-public-key/,
  );
  const badKey = await Deno.makeTempFile({ suffix: ".pem" });
  try {
    await Deno.writeTextFile(
      badKey,
      "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    );
    const result = await run(["run", "-A", MAIN, "--port", "0", "--jwt-public-key", badKey]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /--jwt-public-key: the public key must be a PEM/);
  } finally {
    await Deno.remove(badKey);
  }
});

Deno.test("a real process behind the door verifies tokens too (401 before the upgrade, the name on success)", async () => {
  const server = await ServerProcess.start(["--port", "0", "--jwt-secret", SECRET]);
  try {
    const port = await server.port();
    const answer = await refusal(port, `/?token=${await token({ exp: 1 })}`);
    assert.match(answer, /^HTTP\/1.1 401/);
    assert.match(answer, /error="invalid_token"/);
    const client = await Client.open(`ws://127.0.0.1:${port}/?token=${await token()}`);
    assert.match(client.lines[0]!, /you are alice/);
    await client.close();
  } finally {
    await server.stop();
  }
});
