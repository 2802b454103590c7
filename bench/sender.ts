/**
 * A sending client with Nagle's algorithm off. Deno's `WebSocket` client turns TCP_NODELAY off
 * on its socket (seen with strace: `setsockopt(TCP_NODELAY, 0)`), so a sender that writes
 * small frames back to back waits for the server's ACK, which Linux delays by up to 40 ms when
 * the server has nothing to send back. That put 30–45 ms into both servers' p99. Browsers turn
 * Nagle off for WebSockets, so this is also the more realistic client.
 *
 * It completes the handshake on a raw TCP socket, discards whatever the server sends, and
 * writes masked text frames in order, as soon as the previous write is done: frames sent
 * meanwhile go together in the next write (one write per frame cost the fan-out generator most of
 * its core at 100,000 messages a second).
 */

import { upgradeRaw } from "./raw.ts";

const encoder = new TextEncoder();

export class RawSender {
  readonly #conn: Deno.TcpConn;
  /** Frames waiting for the write in progress to finish. */
  #queue: Uint8Array[] = [];
  #writing = false;
  #closed = false;
  readonly #drained: Promise<void>;
  /** The last text sent and its frame: a sender repeating one payload encodes it once. */
  #lastText: string | undefined;
  #lastFrame: Uint8Array = new Uint8Array(0);

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#drained = this.#discard();
  }

  /** Connects and upgrades; resolves once the server has answered 101. */
  static async open(port: number, path: string): Promise<RawSender> {
    // What the server sends is discarded, the first frames after the 101 included.
    const { conn } = await upgradeRaw(port, path);
    return new RawSender(conn);
  }

  /** Sends one text frame (after those sent before it). */
  send(text: string): void {
    if (this.#closed) return;
    if (text !== this.#lastText) {
      this.#lastText = text;
      this.#lastFrame = frame(encoder.encode(text));
    }
    this.#queue.push(this.#lastFrame);
    if (!this.#writing) this.#flush();
  }

  close(): Promise<void> {
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    return this.#drained;
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const frames = this.#queue;
        this.#queue = [];
        const bytes = new Uint8Array(frames.reduce((sum, f) => sum + f.length, 0));
        let at = 0;
        for (const f of frames) {
          bytes.set(f, at);
          at += f.length;
        }
        for (let done = 0; done < bytes.length;) {
          done += await this.#conn.write(bytes.subarray(done));
        }
      }
    } catch {
      // the server closed the connection; the run is over
    } finally {
      this.#writing = false;
    }
  }

  async #discard(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while ((await this.#conn.read(buffer)) !== null);
    } catch {
      // closed
    }
  }
}

/** A client's text frame: FIN, opcode 1, masked (with a zero key, which leaves the payload as is). */
function frame(payload: Uint8Array): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const out = new Uint8Array(header + 4 + length);
  out[0] = 0x81;
  if (length < 126) out[1] = 0x80 | length;
  else if (length < 65536) {
    out[1] = 0x80 | 126;
    out[2] = length >> 8;
    out[3] = length & 0xff;
  } else {
    out[1] = 0x80 | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(length));
  }
  out.set(payload, header + 4);
  return out;
}
