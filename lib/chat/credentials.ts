/**
 * Verified members' tokens over time: a member whose token expires is closed (4003) unless it
 * sent a fresh one first (`{"type":"token","token":…}`, or `/token TOKEN`), for the same user.
 * A renewed token may change the member's role and rooms; its name stays what it is.
 */

import { CloseCode, type Ref } from "../protocol/protocol.ts";
import { type Identity, roomAllowed } from "./join.ts";
import { refField } from "./replies.ts";
import type { Delivery, Member } from "./room.ts";

/** Checks a token (lib/transport/identity.ts): its identity, or why it is refused. */
export type Verify = (token: string) => Promise<{ identity: Identity } | { refused: string }>;

/** setTimeout's longest delay; a later expiry is checked again then. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export class Credentials {
  readonly #timers = new Map<Member, ReturnType<typeof setTimeout>>();

  constructor(
    readonly verify: Verify | undefined,
    readonly send: Delivery,
    readonly now: () => number,
  ) {}

  /** Starts (or restarts) the wait for a verified member's token to expire. */
  watch(member: Member): void {
    this.forget(member);
    const identity = member.identity;
    if (!identity) return;
    const delay = identity.exp * 1000 - this.now();
    const timer = setTimeout(() => {
      this.#timers.delete(member);
      if (member.identity !== identity) return;
      if (delay > MAX_DELAY_MS) return this.watch(member);
      member.conn.close(CloseCode.tokenExpired, "token expired");
    }, Math.max(0, Math.min(delay, MAX_DELAY_MS)));
    Deno.unrefTimer(timer as unknown as number);
    this.#timers.set(member, timer);
  }

  /** The member is gone: no expiry to wait for. */
  forget(member: Member): void {
    const timer = this.#timers.get(member);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(member);
  }

  /** A `token` message: the member's fresh token, checked, and its expiry moved. */
  async renew(member: Member, token: string, ref: Ref | undefined): Promise<void> {
    const refuse = (message: string) =>
      this.send.to(member, { type: "error", code: "bad_token", message, ...refField(ref) });
    if (!this.verify || !member.identity) {
      return refuse("this connection has no signed token to renew");
    }
    const checked = await this.verify(token);
    if ("refused" in checked) return refuse(`token refused: ${checked.refused}`);
    if (checked.identity.sub !== member.identity.sub) {
      return refuse("the new token is for another user");
    }
    member.identity = { ...checked.identity, name: member.identity.name };
    // A token for fewer rooms than before: the member may not stay where it is.
    if (!roomAllowed(member.identity, member.room.name)) {
      return member.conn.close(
        CloseCode.tokenExpired,
        `your new token does not allow #${member.room.name}`,
      );
    }
    this.watch(member);
    const until = new Date(checked.identity.exp * 1000).toISOString();
    this.send.to(member, {
      type: "notice",
      text: member.view.notice(`token renewed; it expires at ${until}`),
      ...refField(ref),
    });
  }

  /** Stops every wait (shutdown). */
  stop(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }
}
