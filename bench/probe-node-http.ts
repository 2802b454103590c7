/**
 * A connect-rate floor (bench/connections.ts `--probes`): the reference server's chat
 * (bench/reference.ts) over the listener natter's door uses: `node:http` finds the upgrade, the
 * runtime's WebSocket takes the node socket over. No budget, no timers, no app.
 *
 *     deno run -A bench/probe-node-http.ts
 */

import http from "node:http";
import type net from "node:net";

/** The runtime's WebSocket over a node socket that asked to upgrade, as natter's door makes it. */
export function upgradeOnNode(
  request: http.IncomingMessage,
  socket: net.Socket,
  head: Uint8Array,
): WebSocket {
  const headers = new Headers();
  for (
    const name of ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"]
  ) {
    const value = request.headers[name];
    if (typeof value === "string") headers.set(name, value);
  }
  const fetchRequest = new Request(`http://${request.headers.host}${request.url}`, { headers });
  return Deno.upgradeWebSocket(fetchRequest, { socket, head } as Deno.UpgradeWebSocketOptions)
    .socket;
}

if (import.meta.main) {
  const sockets = new Set<WebSocket>();
  const server = http.createServer((_request, response) => response.end("probe\n"));
  server.on("upgrade", (request: http.IncomingMessage, socket: net.Socket, head: Uint8Array) => {
    const ws = upgradeOnNode(request, socket, head);
    ws.onopen = () => sockets.add(ws);
    ws.onclose = () => sockets.delete(ws);
    ws.onmessage = (event) => {
      for (const other of sockets) if (other !== ws) other.send(event.data);
    };
  });
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo;
    console.log(`node-http probe listening on http://127.0.0.1:${port}/`);
  });
}
