/**
 * A receiving client that costs the load generator as little as possible: a raw TCP socket
 * that completes the WebSocket handshake and then only walks frame headers and counts the lines
 * in each text frame, reading 256 KiB at a time. A `WebSocket` object costs the generator an
 * event and a string per frame; against a server that sends one frame per message (the
 * reference) that made the generator, not the server, the limit.
 */

import { upgradeRaw } from "./raw.ts";

const NEWLINE = 10;
const T = 116; // "t"
const EQUALS = 61; // "="
const DOT = 46; // "."
const ZERO = 48;
const NINE = 57;

/** Reading for latency: every read at once, and the `t=MILLISECONDS` stamps in the lines timed. */
export interface Timing {
  /** Called with now minus each stamp (milliseconds, this process's performance.now()). */
  record(delay: number): void;
}
/** Pause between reads that did not fill the buffer. */
const READ_PAUSE_MS = 5;

/** Counts the lines (events) a server sends to one connection. */
export class LineCounter {
  /** Lines received so far. */
  lines = 0;
  /** Frames received so far. */
  frames = 0;
  /** Payload bytes of text frames received so far. */
  bytes = 0;
  readonly #conn: Deno.TcpConn;
  readonly #timing: Timing | undefined;
  /** Stamp parsing, across reads: 0 looking for "t", 1 saw "t", 2 in the number. */
  #stampState = 0;
  #stamp = 0;
  /** Divisor for the next digit after the dot (1 before the dot). */
  #stampScale = 1;
  /** performance.now() when the bytes being consumed were read. */
  #readAt = 0;
  /** Payload bytes still to come in the current frame. */
  #remaining = 0;
  /** Header bytes carried over from the previous read. */
  #header = new Uint8Array(0);
  /** Whether the current frame's payload holds events (text), not a ping or a close. */
  #counting = false;
  readonly done: Promise<void>;

  private constructor(conn: Deno.TcpConn, rest: Uint8Array, timing: Timing | undefined) {
    this.#conn = conn;
    this.#timing = timing;
    this.#readAt = performance.now();
    this.#consume(rest);
    this.done = this.#read();
  }

  /**
   * Connects and upgrades; resolves once the server has answered 101. With `timing`, it reads
   * without pausing and times the stamps in what it receives.
   */
  static async open(port: number, path: string, timing?: Timing): Promise<LineCounter> {
    const { conn, rest } = await upgradeRaw(port, path);
    return new LineCounter(conn, rest, timing);
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
        this.#readAt = performance.now();
        this.#consume(buffer.subarray(0, n));
        // Let a few milliseconds of frames gather in the kernel's buffer: one read then takes
        // many small frames (the reference's) instead of one, so that reading costs little.
        if (n < buffer.length && !this.#timing) {
          await new Promise((resolve) => setTimeout(resolve, READ_PAUSE_MS));
        }
      }
    } catch {
      // closed by close() or by the server
    }
  }

  /** Finds `t=NUMBER` stamps in payload bytes (a stamp may be split across reads). */
  #times(data: Uint8Array, from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const byte = data[i]!;
      if (this.#stampState === 2) {
        if (byte >= ZERO && byte <= NINE) {
          if (this.#stampScale === 1) this.#stamp = this.#stamp * 10 + (byte - ZERO);
          else {
            this.#stamp += (byte - ZERO) / this.#stampScale;
            this.#stampScale *= 10;
          }
          continue;
        }
        if (byte === DOT && this.#stampScale === 1) {
          this.#stampScale = 10;
          continue;
        }
        this.#timing!.record(this.#readAt - this.#stamp);
        this.#stampState = 0;
      }
      if (this.#stampState === 1) {
        if (byte === EQUALS) {
          this.#stampState = 2;
          this.#stamp = 0;
          this.#stampScale = 1;
          continue;
        }
        this.#stampState = 0;
      }
      if (byte === T) this.#stampState = 1;
    }
  }

  /** Walks frames in `data`: headers (possibly split across reads), then payload newlines. */
  #consume(data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      if (this.#remaining > 0) {
        const end = Math.min(data.length, at + this.#remaining);
        if (this.#counting && this.#timing) this.#times(data, at, end);
        if (this.#counting) {
          this.bytes += end - at;
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

/**
 * Delays counted in 10 µs buckets up to 10 s (and one bucket past that): recording one costs no
 * allocation, so the generator's own garbage collection stays out of what it measures.
 */
export class DelayHistogram implements Timing {
  static readonly STEP_MS = 0.01;
  readonly #counts = new Uint32Array(1_000_001);
  count = 0;

  record(delay: number): void {
    const bucket = Math.min(this.#counts.length - 1, Math.max(0, Math.round(delay * 100)));
    this.#counts[bucket]!++;
    this.count++;
  }

  /** The delay below which a fraction `p` of them fall, in milliseconds (NaN when empty). */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.min(this.count - 1, Math.floor(this.count * p));
    let seen = 0;
    for (let bucket = 0; bucket < this.#counts.length; bucket++) {
      seen += this.#counts[bucket]!;
      if (seen > rank) return bucket * DelayHistogram.STEP_MS;
    }
    return NaN;
  }
}
