/**
 * Which pages may open a socket. Browsers send an `Origin`; scripts and REPLs send none and
 * always may. A page may connect when its origin is listed (`--allow-origin`, `--public-origin`),
 * or when it is the server's own origin *and* the server knows the host it was reached by.
 *
 * Why the second condition: "same origin" alone trusts the `Host` header, which DNS rebinding
 * controls. A page at http://evil.test whose name the attacker later points at the server's
 * address sends `Host: evil.test` and `Origin: http://evil.test`: same origin, yet an attacker's
 * page. So a host counts as the server's own only when it is a loopback name (`localhost`,
 * `*.localhost`), an IP address (an attacker's page cannot be served from a literal address it
 * does not own), the `--hostname` natter listens on, or the host of a `--public-origin`.
 */

import type { Logger } from "../base/log.ts";

export interface OriginPolicy {
  /** Origins allowed besides the server's own; "*" allows any. */
  allowOrigins: readonly string[];
  /** Origins the server is reached at (behind a proxy, or by a domain name). */
  publicOrigins: readonly string[];
  /** The interface natter listens on, when it is a name. */
  hostname: string | undefined;
}

/** Why a page may not connect, in words for the refusal; undefined when it may. */
export type OriginCheck = (request: Request) => string | undefined;

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
/** How often the same unknown host is logged. */
const LOG_EVERY_MS = 60_000;

/** The host name of a `Host` header value, without its port, lower case. */
export function hostName(host: string): string {
  const lower = host.trim().toLowerCase();
  if (lower.startsWith("[")) return lower.slice(0, lower.indexOf("]") + 1);
  const colon = lower.indexOf(":");
  return colon === -1 ? lower : lower.slice(0, colon);
}

/** Builds the check for `policy`; refused same-origin pages from unknown hosts are logged. */
export function originCheck(policy: OriginPolicy, log: Logger): OriginCheck {
  const any = policy.allowOrigins.includes("*");
  const listed = new Set([...policy.allowOrigins, ...policy.publicOrigins]);
  const known = new Set(policy.publicOrigins.map((origin) => new URL(origin).hostname));
  if (policy.hostname !== undefined) known.add(hostName(policy.hostname));
  const logged = new Map<string, number>();

  const isKnown = (name: string) =>
    name === "localhost" || name.endsWith(".localhost") || IPV4.test(name) ||
    name.startsWith("[") || known.has(name);

  return (request) => {
    const origin = request.headers.get("origin");
    if (origin === null || any || listed.has(origin)) return undefined;
    const host = request.headers.get("host") ?? "";
    let sameOrigin = false;
    try {
      sameOrigin = new URL(origin).host === host.toLowerCase();
    } catch {
      // not an origin at all
    }
    if (!sameOrigin) return "pages from this origin may not connect (see --allow-origin)";
    const name = hostName(host);
    if (isKnown(name)) return undefined;
    const now = Date.now();
    if (now - (logged.get(name) ?? -Infinity) > LOG_EVERY_MS) {
      if (logged.size > 1000) logged.clear();
      logged.set(name, now);
      log.warn(
        "refused a page from a host this server does not know: if it is reached there, " +
          "start it with --public-origin",
        { origin },
      );
    }
    return `this server does not know the host ${name}: if it is reached at ${origin}, ` +
      `start it with --public-origin ${origin}`;
  };
}
