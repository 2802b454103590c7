/**
 * The web page, embedded at build time with text imports so that `deno bundle` and
 * `deno compile` carry it inside the one file and serving it needs no read permission.
 */

import { createHash } from "node:crypto";
import html from "../../public/index.html" with { type: "text" };
import script from "../../public/app.js" with { type: "text" };
import css from "../../public/style.css" with { type: "text" };

interface Asset {
  body: Uint8Array<ArrayBuffer>;
  type: string;
  etag: string;
}

function asset(text: string, type: string): Asset {
  const body = new TextEncoder().encode(text);
  const hash = createHash("sha256").update(body).digest("base64url").slice(0, 22);
  return { body, type, etag: `"${hash}"` };
}

const ASSETS = new Map<string, Asset>([
  ["/", asset(html, "text/html; charset=utf-8")],
  ["/app.js", asset(script, "text/javascript; charset=utf-8")],
  ["/style.css", asset(css, "text/css; charset=utf-8")],
]);

// The page only ever loads itself and talks to its own server; user text is never HTML.
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

/** True when `path` names an embedded file. */
export function isAsset(path: string): boolean {
  return ASSETS.has(path);
}

/** Serves an embedded file for GET or HEAD, with an ETag and 304 on a matching If-None-Match. */
export function serveAsset(request: Request, path: string): Response {
  const found = ASSETS.get(path);
  if (!found) return new Response("Not Found\n", { status: 404 });
  const headers = {
    ...SECURITY_HEADERS,
    "content-type": found.type,
    "etag": found.etag,
    "cache-control": "no-cache",
  };
  const match = request.headers.get("if-none-match");
  const tags = match?.split(",").map((tag) => tag.trim().replace(/^W\//, "")) ?? [];
  if (tags.includes("*") || tags.includes(found.etag)) {
    return new Response(null, { status: 304, headers });
  }
  const body = request.method === "HEAD" ? null : found.body;
  return new Response(body, {
    headers: { ...headers, "content-length": String(found.body.length) },
  });
}
