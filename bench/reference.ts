/**
 * The minimal reference server that natter is measured against: `Deno.serve` plus a `Set`
 * of sockets, every message sent to every other socket, one `send()` per delivery.
 *
 *     deno run --allow-net bench/reference.ts [--port 8081]
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: { port: { type: "string", default: "8081" } },
});
const sockets = new Set<WebSocket>();

Deno.serve({
  port: Number(values.port),
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`reference listening on http://127.0.0.1:${port}/`),
}, (request) => {
  if (request.headers.get("upgrade") !== "websocket") return new Response("reference server\n");
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    for (const other of sockets) if (other !== socket) other.send(event.data);
  };
  return response;
});
