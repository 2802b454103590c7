/**
 * The application as one `fetch` handler: the page, the WebSocket upgrade, and the
 * HTTP answers around them. Works with `Deno.serve`, `deno serve` and tests alike.
 */

import { resolveOptions } from "./config.ts";
import type { Options } from "./config.ts";
import { attach } from "./connection.ts";
import { Hub } from "./hub.ts";
import { CloseCode, JSON_PROTOCOL } from "./protocol.ts";
import { isAsset, serveAsset } from "./static.ts";
import { VERSION } from "./version.ts";

/** A running natter: hand `fetch` to a server, call `shutdown` before stopping it. */
export interface App {
  fetch(request: Request, info: Deno.ServeHandlerInfo): Response;
  /** Closes every chat connection with 1001 (going away). */
  shutdown(): void;
  readonly hub: Hub;
  readonly options: Options;
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };

/** Builds the app from options (validated; throws ConfigError on a bad one). */
export function createApp(partial: Partial<Options> = {}): App {
  const options = resolveOptions(partial);
  const hub = new Hub({
    server: `natter/${VERSION}`,
    defaultRoom: options.defaultRoom,
    maxMessageBytes: options.maxMessageBytes,
  });

  function upgrade(request: Request, url: URL, info: Deno.ServeHandlerInfo): Response {
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
      p.trim()
    );
    const format = offered.includes(JSON_PROTOCOL) ? "json" : "text";
    // Read before upgrading: once upgraded, the request is gone and so is its address.
    const remote = info.remoteAddr;
    let upgraded;
    try {
      upgraded = Deno.upgradeWebSocket(
        request,
        format === "json" ? { protocol: JSON_PROTOCOL } : {},
      );
    } catch (error) {
      return new Response(`Bad WebSocket upgrade: ${(error as Error).message}\n`, {
        status: 400,
        headers: TEXT,
      });
    }
    attach(upgraded.socket, hub, format, {
      name: url.searchParams.get("name"),
      room: url.searchParams.get("room"),
      ...(remote.transport === "tcp" ? { port: remote.port } : {}),
    });
    return upgraded.response;
  }

  function fetch(request: Request, info: Deno.ServeHandlerInfo): Response {
    const url = new URL(request.url);
    const path = url.pathname;
    const isEndpoint = path === "/" || path === "/ws";
    if (!isEndpoint && !isAsset(path)) {
      return new Response("Not Found\n", { status: 404, headers: TEXT });
    }
    const method = request.method;
    if (method !== "GET" && method !== "HEAD") {
      return new Response("Method Not Allowed\n", {
        status: 405,
        headers: { ...TEXT, allow: "GET, HEAD" },
      });
    }
    const wantsSocket = request.headers.get("upgrade")?.toLowerCase() === "websocket";
    if (isEndpoint && wantsSocket && method === "GET") return upgrade(request, url, info);
    if (path === "/ws") {
      return new Response(
        'This is natter\'s WebSocket endpoint: connect with new WebSocket("ws://<host>/ws").\n',
        { status: 426, headers: { ...TEXT, upgrade: "websocket", connection: "Upgrade" } },
      );
    }
    return serveAsset(request, path);
  }

  return {
    fetch,
    shutdown: () => hub.closeAll(CloseCode.goingAway, "server shutting down"),
    hub,
    options,
  };
}
