/**
 * HTTP between `node:http` and the app's Fetch handlers, for the door (lib/door/door.ts): a request
 * head as a Fetch `Request`, and the answers the door writes on a bare socket itself: the
 * refusal of an upgrade, and a status line for what the HTTP parser could not read.
 */

import type http from "node:http";
import type net from "node:net";

/** The reason phrases the door writes itself. */
const PHRASES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  426: "Upgrade Required",
  429: "Too Many Requests",
  503: "Service Unavailable",
};

/** Headers of a `node:http` request, as a Fetch `Headers` (repeated fields kept). */
function headersOf(raw: string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

/** The headers an upgrade is decided on (lib/app.ts and the runtime read no others). */
const UPGRADE_HEADERS = [
  "host",
  "origin",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "authorization",
] as const;

/** Only those: copying every header into a Fetch `Headers` is a measurable part of a connect. */
function upgradeHeadersOf(parsed: http.IncomingHttpHeaders): Headers {
  const pairs: [string, string][] = [];
  for (const name of UPGRADE_HEADERS) {
    const value = parsed[name];
    if (typeof value === "string") pairs.push([name, value]);
  }
  return new Headers(pairs);
}

/** A `node:http` request head as the Fetch `Request` the app takes (there is no body). */
export function requestOf(request: http.IncomingMessage, method: string): Request {
  const url = `http://${request.headers.host ?? "localhost"}${request.url ?? "/"}`;
  const headers = method === "GET" && request.headers.upgrade !== undefined
    ? upgradeHeadersOf(request.headers)
    : headersOf(request.rawHeaders);
  return new Request(url, { method, headers });
}

/** Writes a refusal on a socket that asked to upgrade, then closes it. */
export function writeRefusal(socket: net.Socket, response: Response): void {
  response.text().then((body) => {
    const head = [`HTTP/1.1 ${response.status} ${PHRASES[response.status] ?? "Error"}`];
    response.headers.forEach((value, name) => head.push(`${name}: ${value}`));
    const bytes = new TextEncoder().encode(body);
    head.push(`content-length: ${bytes.length}`, "connection: close", "", "");
    socket.write(new TextEncoder().encode(head.join("\r\n")));
    socket.end(bytes);
  }).catch(() => socket.destroy());
  // A peer that does not read its refusal does not keep the socket.
  Deno.unrefTimer(setTimeout(() => socket.destroy(), 2000));
}

/**
 * What the parser refuses (not HTTP, headers over 16 KiB) gets a status line, then the end
 * (the server's "clientError").
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: net.Socket): void {
  if (socket.writable && error.code !== "ECONNRESET") {
    const status = error.code === "HPE_HEADER_OVERFLOW"
      ? "431 Request Header Fields Too Large"
      : "400 Bad Request";
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  }
  Deno.unrefTimer(setTimeout(() => socket.destroy(), 1000));
}

/**
 * A request's body, up to `limit` bytes within `ms`; undefined when it is longer (what was sent
 * is left unread: the connection closes after the answer) or does not come in time.
 */
export function readBody(
  request: http.IncomingMessage,
  limit: number,
  ms: number,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  return new Promise((resolve) => {
    const declared = Number(request.headers["content-length"] ?? NaN);
    if (declared > limit) return resolve(undefined);
    const chunks: Uint8Array[] = [];
    let size = 0;
    const done = (result: Uint8Array<ArrayBuffer> | undefined) => {
      clearTimeout(timer);
      request.off("data", onData);
      request.off("end", onEnd);
      request.off("error", onError);
      resolve(result);
    };
    const onError = () => done(undefined);
    const timer = setTimeout(() => done(undefined), ms);
    const onData = (chunk: Uint8Array) => {
      size += chunk.length;
      if (size > limit) return done(undefined);
      chunks.push(chunk);
    };
    const onEnd = () => {
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, at);
        at += chunk.length;
      }
      done(bytes);
    };
    request.on("data", onData);
    request.once("end", onEnd);
    request.once("error", onError);
  });
}
