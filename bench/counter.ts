/**
 * A receiving client that costs the load generator as little as possible: a raw TCP socket
 * that completes the WebSocket handshake and then only walks frame headers and counts the lines
 * in each text frame, reading 256 KiB at a time. A `WebSocket` object costs the generator an
 * event and a string per frame; against a server that sends one frame per message (the
 * reference) that made the generator, not the server, the limit.
 */

const NEWLINE = 10;
/** Pause between reads that did not fill the buffer. */
const READ_PAUSE_MS = 5;

/** Counts the lines (events) a server sends to one connection. */
export class LineCounter {
  /** Lines received so far. */
  lines = 0;
  /** Frames received so far. */
  frames = 0;
  readonly #conn: Deno.TcpConn;
  /** Payload bytes still to come in the current frame. */
  #remaining = 0;
  /** Header bytes carried over from the previous read. */
  #header = new Uint8Array(0);
  /** Whether the current frame's payload holds events (text), not a ping or a close. */
  #counting = false;
  readonly done: Promise<void>;

  private constructor(conn: Deno.TcpConn, rest: Uint8Array) {
    this.#conn = conn;
    this.#consume(rest);
    this.done = this.#read();
  }

  /** Connects and upgrades; resolves once the server has answered 101. */
  static async open(port: number, path: string): Promise<LineCounter> {
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
      if (!text.startsWith("HTTP/1.1 101")) {
        throw new Error(`upgrade refused: ${text.slice(0, 40)}`);
      }
      // Bytes after the header already belong to the first frames (ASCII header: index = bytes).
      return new LineCounter(conn, head.subarray(end + 4));
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) return;
        this.#consume(buffer.subarray(0, n));
        // Let a few milliseconds of frames gather in the kernel's buffer: one read then takes
        // many small frames (the reference's) instead of one, so that reading costs little.
        if (n < buffer.length) await new Promise((resolve) => setTimeout(resolve, READ_PAUSE_MS));
      }
    } catch {
      // closed by close() or by the server
    }
  }

  /** Walks frames in `data`: headers (possibly split across reads), then payload newlines. */
  #consume(data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      if (this.#remaining > 0) {
        const end = Math.min(data.length, at + this.#remaining);
        if (this.#counting) {
          for (
            let i = data.indexOf(NEWLINE, at);
            i !== -1 && i < end;
            i = data.indexOf(NEWLINE, i + 1)
          ) {
            this.lines++;
          }
        }
        this.#remaining -= end - at;
        at = end;
        continue;
      }
      // A header: 2 bytes, plus 2 or 8 for the length (server frames are not masked).
      let header = this.#header;
      const need = (bytes: number) => header.length >= bytes;
      const take = Math.min(data.length - at, 10 - header.length);
      const joined = new Uint8Array(header.length + take);
      joined.set(header);
      joined.set(data.subarray(at, at + take), header.length);
      header = joined;
      if (!need(2)) {
        this.#header = header;
        return;
      }
      const opcode = header[0]! & 0x0f;
      let length = header[1]! & 0x7f;
      let size = 2;
      if (length === 126) {
        if (!need(4)) {
          this.#header = header;
          return;
        }
        length = (header[2]! << 8) | header[3]!;
        size = 4;
      } else if (length === 127) {
        if (!need(10)) {
          this.#header = header;
          return;
        }
        length = Number(new DataView(header.buffer, header.byteOffset + 2, 8).getBigUint64(0));
        size = 10;
      }
      at += size - this.#header.length;
      this.#header = new Uint8Array(0);
      this.frames++;
      // A text frame holds one event per line: its newlines, plus one. Control frames (ping,
      // close) hold none. (Servers here send no fragmented messages.)
      this.#counting = opcode === 1;
      if (this.#counting) this.lines++;
      this.#remaining = length;
    }
  }
}
