/**
 * Maps one Deno WebSocket onto the hub's {@link Connection} interface: the only place
 * where the hub's world meets a real socket.
 */

import type { Connection, Hub, JoinRequest } from "./hub.ts";
import type { Format } from "./protocol.ts";

let counter = 0;

/**
 * Wires a freshly upgraded socket to the hub: it joins on open, its text frames go to
 * the hub, a binary frame gets an error event, and it leaves on close.
 */
export function attach(
  socket: WebSocket,
  hub: Hub,
  format: Format,
  request: JoinRequest,
): Connection {
  const conn: Connection = {
    id: `c${++counter}`,
    format,
    get open() {
      return socket.readyState === WebSocket.OPEN;
    },
    send(frame) {
      socket.send(frame);
    },
    close(code, reason) {
      if (socket.readyState >= WebSocket.CLOSING) return;
      try {
        socket.close(code, reason);
      } catch {
        // Not open yet: the upgrade failed, and the close event follows anyway.
      }
    },
  };
  socket.onopen = () => hub.connect(conn, request);
  socket.onmessage = (event) => {
    if (typeof event.data === "string") hub.receive(conn, event.data);
    else {hub.reject(conn, {
        code: "binary",
        message: "binary frames are not supported: send text",
      });}
  };
  socket.onclose = () => hub.disconnect(conn);
  // An error is always followed by a close event, which does the cleanup.
  socket.onerror = () => {};
  return conn;
}
