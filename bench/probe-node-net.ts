/**
 * A connect-rate floor (bench/connections.ts `--probes`): the reference server's chat over a bare
 * `node:net` socket, the request head split by hand from the first chunk (enough for the
 * benchmark's clients, not a parser anyone should serve the internet with), then the runtime's
 * WebSocket over the node socket. What is left is the runtime's cost of a node socket.
 *
 *     deno run -A bench/probe-node-net.ts
 */

import net from "node:net";

const sockets = new Set<WebSocket>();
const decoder = new TextDecoder();

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.once("data", (chunk: Uint8Array) => {
    const text = decoder.decode(chunk);
    const end = text.indexOf("\r\n\r\n");
    const lines = text.slice(0, end).split("\r\n");
    const path = lines[0]!.split(" ")[1];
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    const request = new Request(`http://${headers.get("host")}${path}`, { headers });
    const head = chunk.subarray(end + 4);
    const { socket: ws } = Deno.upgradeWebSocket(
      request,
      { socket, head } as Deno.UpgradeWebSocketOptions,
    );
    ws.onopen = () => sockets.add(ws);
    ws.onclose = () => sockets.delete(ws);
    ws.onmessage = (event) => {
      for (const other of sockets) if (other !== ws) other.send(event.data);
    };
  });
});

server.listen(0, "127.0.0.1", () => {
  const { port } = server.address() as net.AddressInfo;
  console.log(`node-net probe listening on http://127.0.0.1:${port}/`);
});
