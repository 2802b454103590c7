/**
 * The shared token (`--token`): where a client may present it (an `Authorization: Bearer`
 * header, the `natter.token.<token>` subprotocol from browsers, or `?token=`), and its
 * comparison with the server's in constant time.
 */

import { timingSafeEqual } from "node:crypto";

/** Subprotocol prefix that carries the token from browsers, which cannot set headers. */
export const TOKEN_PROTOCOL_PREFIX = "natter.token.";

/** The token a request presents, if any: its header first, then a subprotocol, then `?token=`. */
export function tokenOf(request: Request, url: URL, offered: string[]): string | undefined {
  const header = request.headers.get("authorization");
  const bearer = header === null ? null : /^bearer\s+(\S+)\s*$/i.exec(header);
  if (bearer) return bearer[1];
  const fromProtocol = offered.find((p) => p.startsWith(TOKEN_PROTOCOL_PREFIX));
  if (fromProtocol) return fromProtocol.slice(TOKEN_PROTOCOL_PREFIX.length);
  return url.searchParams.get("token") ?? undefined;
}

/**
 * Whether a request may connect: always when the server has no `token`, otherwise when it
 * presents that token. `offered` are the subprotocols it offers.
 */
export function authorized(
  token: string | undefined,
  request: Request,
  url: URL,
  offered: string[],
): boolean {
  if (token === undefined) return true;
  const given = tokenOf(request, url, offered);
  return given !== undefined && sameSecret(given, token);
}

export function sameSecret(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  // Compare equal-length buffers in constant time; the length check leaks only the length.
  return a.length === b.length && timingSafeEqual(a, b);
}
