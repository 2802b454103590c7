/**
 * The WebSocket handshake on a raw TCP socket, for the benchmark's clients that skip the
 * `WebSocket` object (bench/counter.ts, bench/sender.ts, the stuck client in bench/slow.ts).
 */

/**
 * Connects to 127.0.0.1:`port`, with Nagle off, and upgrades `path`; resolves once the server
 * has answered 101, with the bytes that came after the answer (the first frames).
 */
export async function upgradeRaw(
  port: number,
  path: string,
): Promise<{ conn: Deno.TcpConn; rest: Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  await conn.write(new TextEncoder().encode(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const buffer = new Uint8Array(4096);
  let head = new Uint8Array(0);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("closed during the handshake");
    const joined = new Uint8Array(head.length + n);
    joined.set(head);
    joined.set(buffer.subarray(0, n), head.length);
    head = joined;
    const text = new TextDecoder().decode(head);
    const end = text.indexOf("\r\n\r\n");
    if (end === -1) continue;
    if (!text.startsWith("HTTP/1.1 101")) throw new Error(`upgrade refused: ${text.slice(0, 40)}`);
    // The header is ASCII, so its length in characters is its length in bytes.
    return { conn, rest: head.subarray(end + 4) };
  }
}
