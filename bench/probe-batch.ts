/**
 * A floor for fan-out on this runtime (bench/fanout.ts `--probes`): the reference's chat with the
 * batching natter does and nothing else. The lines that arrive in one event-loop turn are joined
 * once, in frames of at most 64 KiB, and every socket gets those frames at the turn's end (a
 * `setImmediate`); the sender of a turn's lines, when there is only one, gets none. No store, no
 * parsing, no names, no limits: what is left is the runtime's cost of a batched broadcast.
 *
 *     deno run -A bench/probe-batch.ts [--node]
 *
 * `--node` listens through `node:http` and runs the runtime's WebSocket on the node socket, as
 * natter's own listener does.
 */

import http from "node:http";
import type net from "node:net";
import { setImmediate } from "node:timers";
import { upgradeOnNode } from "./probe-node-http.ts";

const MAX_FRAME = 64 * 1024;
const sockets = new Set<WebSocket>();
let lines: string[] = [];

let from: WebSocket | undefined;
let several = false;
let scheduled = false;

function flush(): void {
  scheduled = false;
  const frames: string[] = [];
  let start = 0;
  let size = 0;
  for (let i = 0; i < lines.length; i++) {
    size += lines[i]!.length + 1;
    if (size > MAX_FRAME && i > start) {
      frames.push(lines.slice(start, i).join("\n"));
      start = i;
      size = lines[i]!.length + 1;
    }
  }
  frames.push(lines.slice(start).join("\n"));
  const skip = several ? undefined : from;
  lines = [];

  from = undefined;
  several = false;
  for (const socket of sockets) {
    if (socket === skip || socket.readyState !== WebSocket.OPEN) continue;
    for (const frame of frames) socket.send(frame);
  }
}

/** A new WebSocket joins the chat. */
function follow(socket: WebSocket): void {
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    lines.push(String(event.data));
    if (from !== undefined && from !== socket) several = true;
    from = socket;
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

if (Deno.args.includes("--node")) {
  // Over node:http, as natter's door: the runtime's WebSocket on the node socket.
  const server = http.createServer((_request, response) => response.end("batch probe\n"));
  server.on(
    "upgrade",
    (request: http.IncomingMessage, socket: net.Socket, head: Uint8Array) =>
      follow(upgradeOnNode(request, socket, head)),
  );
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo;
    console.log(`batch probe listening on http://127.0.0.1:${port}/`);
  });
} else {
  Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: ({ port }) => console.log(`batch probe listening on http://127.0.0.1:${port}/`),
  }, (request) => {
    if (request.headers.get("upgrade") !== "websocket") return new Response("batch probe\n");
    const { socket, response } = Deno.upgradeWebSocket(request);
    follow(socket);
    return response;
  });
}
