/**
 * Cheap network attacks, as a stranger would make them, for the door tests and the runtime
 * reproductions. Sockets come from `node:net` because it can reset a connection
 * (`resetAndDestroy`) and pick its source address on 127.0.0.0/8 (`localAddress`), so that one
 * test can attack from one address while a bystander connects from another.
 */

import net from "node:net";
import { clientFrame, upgradeRequest } from "./helpers.ts";

/** Connects a plain TCP socket from `from` (127.0.0.1 unless given); resolves once connected. */
export function connectFrom(port: number, from?: string, ms = 2000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      port,
      host: "127.0.0.1",
      ...(from === undefined ? {} : { localAddress: from }),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("connect timed out"));
    }, ms);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Sends `count` WebSocket upgrade requests and resets each connection (RST) as soon as the
 * request is written, before the 101 can be read. Returns how many were sent.
 */
export async function abortedHandshakes(port: number, count: number, from?: string) {
  let sent = 0;
  for (let i = 0; i < count; i++) {
    try {
      const socket = await connectFrom(port, from);
      socket.on("error", () => {});
      await new Promise<void>((resolve) => socket.write(upgradeRequest("/"), () => resolve()));
      socket.resetAndDestroy();
      sent++;
    } catch {
      // refused or timed out: the server is not accepting, which the test will see
    }
  }
  return sent;
}

/** Whether the server has closed `socket` (it ended or reset), within `ms`. */
export function closedByServer(socket: net.Socket, ms: number): Promise<boolean> {
  if (socket.destroyed || socket.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const done = () => {
      clearTimeout(timer);
      resolve(true);
    };
    socket.once("end", done);
    socket.once("close", done);
    socket.resume();
  });
}

/**
 * A WebSocket client that starts a text message and never finishes it: it sends `mib` MiB in
 * 1 MiB continuation frames (paced, as a real uplink would be), answers every ping so that
 * the idle timeout never drops it, and never answers a close.
 */
export class FragmentHolder {
  readonly events: string[] = [];
  #ended = false;
  #writing: Promise<void> = Promise.resolve();

  private constructor(readonly conn: Deno.TcpConn) {}

  get ended(): boolean {
    return this.#ended;
  }

  static async open(port: number, path = "/"): Promise<FragmentHolder> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const holder = new FragmentHolder(conn);
    await conn.write(new TextEncoder().encode(upgradeRequest(path)));
    holder.#read();
    return holder;
  }

  #send(bytes: Uint8Array): Promise<void> {
    this.#writing = this.#writing.then(async () => {
      // A write may take only part of a MiB: the rest follows, or the frames fall out of step.
      for (let done = 0; done < bytes.length;) done += await this.conn.write(bytes.subarray(done));
    }).catch(() => {
      this.#ended = true;
    });
    return this.#writing;
  }

  async #read(): Promise<void> {
    const chunk = new Uint8Array(65536);
    let buffer = new Uint8Array(0);
    let inHandshake = true;
    try {
      for (;;) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        const joined = new Uint8Array(buffer.length + n);
        joined.set(buffer);
        joined.set(chunk.subarray(0, n), buffer.length);
        buffer = joined;
        if (inHandshake) {
          const end = new TextDecoder().decode(buffer).indexOf("\r\n\r\n");
          if (end < 0) continue;
          this.events.push(new TextDecoder().decode(buffer.subarray(0, 12)));
          buffer = buffer.subarray(end + 4);
          inHandshake = false;
        }
        while (buffer.length >= 2) {
          const opcode = buffer[0]! & 0x0f;
          let length = buffer[1]! & 0x7f;
          let offset = 2;
          if (length === 126) length = (buffer[2]! << 8) | buffer[3]!, offset = 4;
          else if (length === 127) {
            length = Number(new DataView(buffer.buffer, buffer.byteOffset + 2, 8).getBigUint64(0));
            offset = 10;
          }
          if (buffer.length < offset + length) break;
          const payload = buffer.slice(offset, offset + length);
          buffer = buffer.subarray(offset + length);
          if (opcode === 0x9) {
            this.events.push("ping");
            this.#send(clientFrame(0xa, payload, { plain: true }));
          } else if (opcode === 0x8) this.events.push(`close ${(payload[0]! << 8) | payload[1]!}`);
        }
      }
    } catch {
      // reset
    }
    this.#ended = true;
  }

  /** Sends `mib` MiB of one unfinished message, a MiB every `paceMs`. */
  async hold(mib: number, paceMs = 15): Promise<void> {
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    await this.#send(clientFrame(0x1, chunk, { fin: false, plain: true }));
    for (let i = 1; i < mib && !this.#ended; i++) {
      await this.#send(clientFrame(0x0, chunk, { fin: false, plain: true }));
      await new Promise((resolve) => setTimeout(resolve, paceMs));
    }
  }

  close(): void {
    this.#ended = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** Open descriptors of a process (Linux). */
export function openFiles(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/**
 * Server-side TCP sockets on `port` that still hold unsent data, in any state (from
 * /proc/net/tcp and tcp6): what the kernel keeps for peers that do not read, whether or not
 * the server still has them open.
 */
export function unsentSockets(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  let count = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 5 || !fields[1]!.endsWith(`:${hex}`)) continue;
      const [tx] = fields[4]!.split(":");
      if (parseInt(tx!, 16) > 0) count++;
    }
  }
  return count;
}
