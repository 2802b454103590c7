/**
 * The reload grace. A page that reloads, or whose network drops for a moment, closes its socket
 * and opens another a second later; telling the room "alice left", "alice joined" each time is
 * noise. A page names its tab with a `session` (random, kept across reloads in the tab); when such
 * a connection goes away without saying goodbye (close code 1001 or none: a reload, a closed tab,
 * a lost network), its member stays in its room, silent, for the grace. A new connection of the
 * same session into the same room within the grace takes the member back: same name, no notices,
 * a welcome that recovers what it missed. Otherwise the member leaves when the grace ends. A REPL
 * (no session), `/quit` and a clean close leave at once.
 */

import type { Member } from "./room.ts";

/** How long a member whose page went away stays, in milliseconds. */
export const GRACE_MS = 5000;

/** What a session may be: the page's random id (a UUID), nothing longer. */
const SESSION = /^[A-Za-z0-9_-]{8,64}$/;

/** A session id as the page sends it, or undefined when absent or not one. */
export function sessionOf(raw: string | null | undefined): string | undefined {
  return raw && SESSION.test(raw) ? raw : undefined;
}

interface Away {
  member: Member;
  timer: ReturnType<typeof setTimeout>;
  leave: () => void;
}

export class Lingering {
  readonly #away = new Map<string, Away>();

  constructor(readonly graceMs: number) {}

  /** Keeps `member` for the grace; `leave` runs when it ends without the session coming back. */
  hold(session: string, member: Member, leave: () => void): void {
    this.#drop(session, true); // an older one of the same session goes now
    const timer = setTimeout(() => this.#drop(session, true), this.graceMs);
    this.#away.set(session, { member, timer, leave });
  }

  /** The member the session left in `room`, taken back; undefined when there is none. */
  take(session: string | undefined, room: string): Member | undefined {
    const away = session === undefined ? undefined : this.#away.get(session);
    if (!away || away.member.room.name !== room) return undefined;
    this.#drop(session!, false);
    return away.member;
  }

  /** Lets every held member leave now (at shutdown). */
  stop(): void {
    for (const session of [...this.#away.keys()]) this.#drop(session, true);
  }

  #drop(session: string, leave: boolean): void {
    const away = this.#away.get(session);
    if (!away) return;
    clearTimeout(away.timer);
    this.#away.delete(session);
    if (leave) away.leave();
  }
}
