/**
 * Verified identities (`--jwt-secret`, `--jwt-public-key`): a JSON Web Token checked with
 * `jose` over WebCrypto (no home-made crypto or parsing), and its claims turned into the
 * {@link Identity} the hub knows a member by. A token travels where `--token` does
 * (lib/transport/token.ts: `Authorization: Bearer`, the `natter.token.<token>` subprotocol,
 * `?token=`).
 *
 * Only the algorithm of the configured key is accepted (HS256 for a secret; ES256 or RS256 for
 * the public key, whichever it is): `alg: none`, another algorithm, a bad signature, a missing
 * `sub` or `exp`, an expired or not-yet-valid token are refused, each with its reason.
 */

import { errors, importSPKI, jwtVerify } from "jose";
import type { Identity, Role } from "../chat/join.ts";
import { checkName, checkRoom, NAME_RULE, quote, ROOM_RULE } from "../protocol/text.ts";

/** Seconds of clock skew allowed between the token's issuer and this server. */
const CLOCK_TOLERANCE_S = 5;
/** Room patterns a token may carry: a room name, or a prefix ending in `*`. */
const MAX_ROOM_PATTERNS = 100;

/** The key tokens are checked with, as configured. */
export type JwtKey = { secret: string } | { publicKeyPem: string };

/** A token's identity, or why it is refused (one line, shown to the client with the 401). */
export type Verified = { identity: Identity } | { refused: string };

/** Imports a PEM public key as ES256 (P-256), else RS256; throws when it is neither. */
async function publicKey(pem: string): Promise<{ key: CryptoKey; alg: string }> {
  for (const alg of ["ES256", "RS256"]) {
    try {
      return { key: await importSPKI(pem, alg), alg };
    } catch {
      // not this kind of key
    }
  }
  throw new Error(
    'the public key must be a PEM "PUBLIC KEY" (SPKI) of an ECDSA P-256 (ES256) or RSA (RS256) key',
  );
}

export class Verifier {
  readonly #key: Promise<{ key: CryptoKey | Uint8Array; alg: string }>;

  constructor(key: JwtKey) {
    this.#key = "secret" in key
      ? Promise.resolve({ key: new TextEncoder().encode(key.secret), alg: "HS256" })
      : publicKey(key.publicKeyPem);
    this.#key.catch(() => {}); // reported by ready()
  }

  /** Resolves once the key is usable; rejects with why it is not (a bad PEM). */
  async ready(): Promise<string> {
    return (await this.#key).alg;
  }

  /** Checks a token and reads its claims. Never throws. */
  async verify(token: string): Promise<Verified> {
    let payload;
    try {
      const { key, alg } = await this.#key;
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [alg],
        requiredClaims: ["sub", "exp"],
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (error) {
      return { refused: why(error) };
    }
    return claims(payload);
  }
}

/** Why `jose` refused a token, in words a client's developer can act on. */
function why(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "the token has expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") return "the token is not valid yet (nbf)";
    return `the token's ${error.claim} claim is missing or invalid`;
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return "the token is signed with an algorithm this server does not accept";
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "the token's signature does not match";
  }
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) {
    return "the token is not a valid signed JSON Web Token";
  }
  return "the token could not be verified";
}

/** The identity in a verified token's claims, or why they are unusable. */
function claims(payload: Record<string, unknown>): Verified {
  const sub = payload.sub;
  if (typeof sub !== "string" || sub === "" || sub.length > 256) {
    return { refused: "the token's sub claim must be a user id of 1-256 characters" };
  }
  const rawName = payload.name ?? sub;
  const name = typeof rawName === "string" ? checkName(rawName) : null;
  if (name === null) {
    return {
      refused: `the token's name ${
        typeof rawName === "string" ? quote(rawName) : "claim"
      } is not a name: use ${NAME_RULE}${
        payload.name === undefined ? " (or give a name claim)" : ""
      }`,
    };
  }
  let role: Role = "user";
  if (payload.role !== undefined) {
    if (payload.role !== "moderator" && payload.role !== "admin") {
      return { refused: `the token's role must be "moderator" or "admin", or absent` };
    }
    role = payload.role;
  }
  let rooms: string[] | undefined;
  if (payload.rooms !== undefined) {
    const list = payload.rooms;
    if (!Array.isArray(list) || list.length > MAX_ROOM_PATTERNS) {
      return { refused: `the token's rooms claim must be a list of rooms or prefixes ending in *` };
    }
    rooms = [];
    for (const entry of list) {
      const pattern = typeof entry === "string" ? roomPattern(entry) : null;
      if (pattern === null) {
        return {
          refused: `the token's rooms claim has ${
            typeof entry === "string" ? quote(entry) : "an entry"
          } that is not a room (${ROOM_RULE}) or a prefix ending in *`,
        };
      }
      rooms.push(pattern);
    }
  }
  // Past the year 9999 a time cannot be written as a date (and no token needs to last so long).
  if (typeof payload.exp !== "number" || payload.exp > 253_402_300_799) {
    return { refused: "the token's exp claim is too far in the future" };
  }
  if (payload.nick !== undefined && typeof payload.nick !== "boolean") {
    return { refused: "the token's nick claim must be true or false" };
  }
  return {
    identity: {
      sub,
      name,
      role,
      rooms,
      nick: payload.nick === true,
      exp: payload.exp as number,
    },
  };
}

/** A room name, or a prefix (a room name's start, then `*`), canonical; null when neither. */
function roomPattern(raw: string): string | null {
  if (raw === "*") return "*";
  if (raw.endsWith("*")) {
    const prefix = checkRoom(raw.slice(0, -1));
    return prefix === null ? null : `${prefix}*`;
  }
  return checkRoom(raw);
}
