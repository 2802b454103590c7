/**
 * Mints a signed token for natter (`--jwt-secret`), for testing and ops:
 *
 *     NATTER_JWT_SECRET=… deno task token -- --name alice --role moderator --ttl 1h
 *
 * Prints the token. The secret comes from --secret-file, else NATTER_JWT_SECRET (natter's own
 * variable). An operator's own backend mints tokens the same way with any JWT library: HS256,
 * claims `sub`, `name`, `role`, `rooms`, `nick`, `exp` (docs/PROTOCOL.md, "Signed tokens").
 */

import { parseArgs } from "node:util";
import { SignJWT } from "jose";
import { checkName, checkRoom, NAME_RULE, ROOM_RULE } from "../lib/protocol/text.ts";

const USAGE = `Usage: deno task token -- --name NAME [--sub ID] [--role moderator|admin]
                 [--rooms ROOM,PREFIX*] [--nick] [--ttl 1h] [--secret-file PATH]
The secret is read from --secret-file, else from NATTER_JWT_SECRET.`;

function fail(message: string): never {
  console.error(`token: ${message}\n${USAGE}`);
  Deno.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    // `deno task token -- …` passes the `--` on.
    args: Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args,
    strict: true,
    options: {
      name: { type: "string" },
      sub: { type: "string" },
      role: { type: "string" },
      rooms: { type: "string" },
      nick: { type: "boolean", default: false },
      ttl: { type: "string", default: "1h" },
      "secret-file": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (error) {
  fail((error as Error).message);
}
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
if (!values.name && !values.sub) fail("give --name (and --sub for a user id other than the name)");
if (values.role !== undefined && values.role !== "moderator" && values.role !== "admin") {
  fail(`--role must be moderator or admin, got ${JSON.stringify(values.role)}`);
}
const ttl = /^(\d{1,6})([smhd])$/.exec(values.ttl);
const unit = { s: 1, m: 60, h: 3600, d: 86400 };
const seconds = ttl ? Number(ttl[1]) * unit[ttl[2] as keyof typeof unit] : 0;
// What natter accepts: a token that lives a while, and at most ten years.
if (!ttl || seconds < 10 || seconds > 3650 * 86400) {
  fail(
    `--ttl must be a duration from 10s to 3650d, such as 90s, 30m, 12h or 7d, got ${
      JSON.stringify(values.ttl)
    }`,
  );
}
// The same rules natter checks the claims by: a token it would refuse is not minted.
if (values.name !== undefined && checkName(values.name) === null) {
  fail(`--name ${JSON.stringify(values.name)} is not a name natter takes: ${NAME_RULE}`);
}
for (const room of values.rooms?.split(",").map((r) => r.trim()).filter(Boolean) ?? []) {
  const bare = room.endsWith("*") ? room.slice(0, -1) : room;
  if (room !== "*" && checkRoom(bare) === null) {
    fail(`--rooms: ${JSON.stringify(room)} is not a room (${ROOM_RULE}) or a prefix ending in *`);
  }
}

let secret: string | undefined;
if (values["secret-file"]) {
  try {
    secret = Deno.readTextFileSync(values["secret-file"]).trim();
  } catch (error) {
    fail(`cannot read ${values["secret-file"]}: ${(error as Error).message}`);
  }
} else secret = Deno.env.get("NATTER_JWT_SECRET");
if (!secret) fail("no secret: set NATTER_JWT_SECRET or give --secret-file");
if (new TextEncoder().encode(secret).length < 32) {
  fail("the secret must be at least 32 bytes, as natter requires");
}

const claims: Record<string, unknown> = {};
if (values.name) claims.name = values.name;
if (values.role) claims.role = values.role;
if (values.rooms) claims.rooms = values.rooms.split(",").map((room) => room.trim()).filter(Boolean);
if (values.nick) claims.nick = true;
const token = await new SignJWT(claims)
  .setProtectedHeader({ alg: "HS256", typ: "JWT" })
  .setSubject(values.sub ?? values.name!)
  .setIssuedAt()
  .setExpirationTime(`${seconds}s`)
  .sign(new TextEncoder().encode(secret));
console.log(token);
