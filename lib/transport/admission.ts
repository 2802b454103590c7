/**
 * Who may connect where signed tokens are verified (`--jwt-secret`, `--jwt-public-key`), decided
 * before the upgrade: a verified user (its identity), a guest (where `--guests` lets them in:
 * no token at all, and its name will carry the guest mark), or a refusal: 401 for a missing or
 * bad token, 403 for a room the token does not allow. A bad token is refused even where guests
 * are welcome: whoever sent it meant to be someone.
 */

import { type Identity, roomAllowed } from "../chat/join.ts";
import type { Options } from "../ops/config.ts";
import { checkRoom } from "../protocol/text.ts";
import type { Verifier } from "./identity.ts";
import { plain } from "./routes.ts";
import { tokenOf } from "./token.ts";

/** Who is connecting, as the gate hands it to the hub. */
export interface Who {
  identity?: Identity;
  guest?: boolean;
}

/** A refused upgrade, and its reason as /metrics counts it. */
export interface Refusal {
  refusal: Response;
  reason: string;
}

const BEARER = { "www-authenticate": 'Bearer realm="natter"' };

export class Admission {
  readonly #verifier: Verifier | undefined;
  readonly #guests: boolean;
  readonly #defaultRoom: string;

  constructor(options: Options, verifier: Verifier | undefined) {
    this.#verifier = verifier;
    this.#guests = options.guests ?? verifier === undefined;
    this.#defaultRoom = options.defaultRoom;
  }

  /** Whether connections need a look at their token before the upgrade. */
  get verifies(): boolean {
    return this.#verifier !== undefined;
  }

  /** Whether someone without a token may connect. */
  get guests(): boolean {
    return this.#guests;
  }

  /** Who a request is, or the refusal to send and why (for the log and metrics). */
  async admit(request: Request, url: URL): Promise<Who | Refusal> {
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
      p.trim()
    );
    const token = tokenOf(request, url, offered);
    if (token === undefined) {
      if (this.#guests) return { guest: true };
      return {
        reason: "token",
        refusal: plain(
          401,
          "Unauthorized: this server needs a signed token " +
            "(?token=, Authorization: Bearer, or the natter.token.<token> subprotocol)",
          BEARER,
        ),
      };
    }
    const checked = await this.#verifier!.verify(token);
    if ("refused" in checked) {
      return {
        reason: "token",
        refusal: plain(401, `Unauthorized: ${checked.refused}`, {
          "www-authenticate": 'Bearer realm="natter", error="invalid_token"',
        }),
      };
    }
    const identity = checked.identity;
    const room = checkRoom(url.searchParams.get("room") ?? "") ?? this.#defaultRoom;
    if (!roomAllowed(identity, room)) {
      return {
        reason: "token_room",
        refusal: plain(
          403,
          `Forbidden: your token does not allow #${room}; it allows ${
            identity.rooms!.map((r) => `#${r}`).join(", ") || "no room"
          } (ask for one with ?room=)`,
        ),
      };
    }
    return { identity };
  }

  /** What the page asks before it connects (`/auth`): whether a token is needed, and if one works. */
  async check(request: Request, url: URL): Promise<{ required: boolean; accepted: boolean }> {
    const token = tokenOf(request, url, []);
    if (token === undefined) return { required: !this.#guests, accepted: this.#guests };
    const checked = await this.#verifier!.verify(token);
    return { required: !this.#guests, accepted: "identity" in checked };
  }
}
