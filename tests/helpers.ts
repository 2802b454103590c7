/** Shared test tools: a real server on port 0, WebSocket clients that wait for lines, fakes. */

import { SignJWT } from "jose";
import { createApp } from "../lib/app.ts";
import type { App } from "../lib/app.ts";
import type { Options } from "../lib/ops/config.ts";
import type { Connection } from "../lib/chat/room.ts";
import type { Format } from "../lib/protocol/protocol.ts";
import {
  type Draft,
  type HistoryStore,
  type Stored,
  StoreReset,
  Unconfirmed,
} from "../lib/store/history.ts";
import { MemoryStore } from "../lib/store/memory.ts";

/** A natter app served on a free loopback port. */
export interface TestServer {
  app: App;
  port: number;
  /** `http://127.0.0.1:PORT` + path. */
  http(path?: string): string;
  /** `ws://127.0.0.1:PORT` + path. */
  ws(path?: string): string;
  close(): Promise<void>;
}

/** Starts the app on `127.0.0.1:0`; `close()` shuts it down and awaits the server. */
export function startServer(options: Partial<Options> = {}): TestServer {
  const app = createApp(options);
  const abort = new AbortController();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", signal: abort.signal, onListen: () => {} },
    app.fetch,
  );
  const port = server.addr.port;
  return {
    app,
    port,
    http: (path = "/") => `http://127.0.0.1:${port}${path}`,
    ws: (path = "/") => `ws://127.0.0.1:${port}${path}`,
    async close() {
      await app.shutdown(1000);
      abort.abort();
      await server.finished;
    },
  };
}

/** Waits until `check()` is true (or resolves true), polling; fails with `what` after `ms`. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 3000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last few lines, each cut short, for failure messages that stay readable. */
function describe(lines: string[]): string {
  const shown = lines.slice(-5).map((line) => line.length > 120 ? `${line.slice(0, 120)}…` : line);
  return `${lines.length} lines${lines.length > 5 ? ", the last 5" : ""}: ${JSON.stringify(shown)}`;
}

/** A real WebSocket client that records every line it receives (frames split on newlines). */
export class Client {
  readonly socket: WebSocket;
  /** Every line received, in order. */
  readonly lines: string[] = [];
  /** How many frames arrived (a frame may carry several lines). */
  frames = 0;
  /** How many of {@link lines} earlier `next*()` calls have consumed. */
  #read = 0;
  readonly closed: Promise<CloseEvent>;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.onmessage = (event) => {
      this.frames++;
      this.lines.push(...String(event.data).split("\n"));
    };
    this.closed = new Promise((resolve) =>
      socket.addEventListener("close", resolve, { once: true })
    );
  }

  /** Opens a client and waits until it is open (and, by default, welcomed). */
  static async open(
    url: string,
    protocol?: string | string[],
    { welcomed = true } = {},
  ): Promise<Client> {
    const socket = protocol ? new WebSocket(url, protocol) : new WebSocket(url);
    const client = new Client(socket);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error(`could not connect to ${url}`)), {
        once: true,
      });
    });
    if (welcomed) {
      await client.next((line) => line.startsWith("* you are") || line.includes('"welcome"'));
    }
    return client;
  }

  /** Opens a natter.v1 (JSON) client. */
  static json(url: string): Promise<Client> {
    return Client.open(url, "natter.v1");
  }

  send(data: string | Record<string, unknown>): void {
    this.socket.send(typeof data === "string" ? data : JSON.stringify(data));
  }

  /** The next unread line that matches, skipping (and consuming) the ones before it. */
  async next(match: (line: string) => boolean = () => true, ms = 3000): Promise<string> {
    let found = -1;
    await until(
      () => {
        found = this.lines.findIndex((line, i) => i >= this.#read && match(line));
        return found !== -1;
      },
      `a matching line (unread: ${describe(this.lines.slice(this.#read))})`,
      ms,
    );
    this.#read = found + 1;
    return this.lines[found]!;
  }

  /** The next unread JSON event of `type` that matches. */
  async event(
    type: string,
    match: (event: Record<string, unknown>) => boolean = () => true,
    ms?: number,
  ): Promise<Record<string, unknown>> {
    const line = await this.next((line) => {
      const event = JSON.parse(line);
      return event.type === type && match(event);
    }, ms);
    return JSON.parse(line);
  }

  /** Lines received and not yet consumed, after waiting `ms` for stragglers. */
  async unread(ms = 150): Promise<string[]> {
    await sleep(ms);
    return this.lines.slice(this.#read);
  }

  /** Closes (if still open) and waits for the close event. */
  async close(): Promise<CloseEvent> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    return await this.closed;
  }
}

/** The `welcome` event a natter.v1 client got when it joined. */
export function welcomeOf(client: Client) {
  return JSON.parse(client.lines.find((l) => l.includes('"welcome"'))!);
}

/** A connection for hub tests: records frames, can be told to throw, remembers being closed. */
export class FakeConnection implements Connection {
  static #count = 0;
  readonly id = `fake${++FakeConnection.#count}`;
  readonly frames: string[] = [];
  open = true;
  throwOnSend = false;
  closedWith: { code: number; reason: string } | undefined;

  constructor(readonly format: Format = "text") {}

  send(frame: string, _bytes?: number): void {
    if (this.throwOnSend) throw new Error("send failed");
    this.frames.push(frame);
  }

  close(code: number, reason: string): void {
    this.open = false;
    this.closedWith = { code, reason };
  }

  /** Frames parsed as JSON (for natter.v1 fakes). */
  get events(): Record<string, unknown>[] {
    return this.frames.map((frame) => JSON.parse(frame));
  }

  /** Forgets the frames received so far. */
  clear(): void {
    this.frames.length = 0;
  }
}

/** The project's main.ts, as a path for subprocesses. */
export const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A running natter process, as a user starts it. */
export class ServerProcess {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly #done: Promise<unknown>;

  /** Runs `deno ARGS`, or another program (a compiled natter) with `executable`. */
  constructor(
    args: string[],
    options: { cwd?: string; env?: Record<string, string>; executable?: string } = {},
  ) {
    this.child = new Deno.Command(options.executable ?? Deno.execPath(), {
      args,
      cwd: options.cwd ?? Deno.cwd(),
      env: { NO_COLOR: "1", ...options.env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const collect = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this[into] += chunk;
    };
    this.#done = Promise.all([
      collect(this.child.stdout, "stdout"),
      collect(this.child.stderr, "stderr"),
    ]);
  }

  /** Starts `deno run --allow-net main.ts ARGS` (or another script) and waits for its banner. */
  static async start(
    args: string[] = ["--port", "0"],
    script = MAIN,
    permissions = ["--allow-net"],
  ) {
    const server = new ServerProcess(["run", ...permissions, script, ...args]);
    await server.port();
    return server;
  }

  /** The port from the banner line, once it is printed. */
  async port(ms = 15000): Promise<number> {
    let port = 0;
    await until(
      () => {
        const found = /listening on https?:\/\/[^\s]+:(\d+)\//.exec(this.stdout);
        if (found) port = Number(found[1]);
        else if (this.stderr.includes("error") || this.stderr.includes("natter:")) {
          throw new Error(
            `natter failed to start: ${this.stderr}`,
          );
        }
        return found !== null;
      },
      `natter's banner (stdout ${JSON.stringify(this.stdout)}, stderr ${
        JSON.stringify(this.stderr)
      })`,
      ms,
    );
    return port;
  }

  /** Waits for the process to end and returns its status, with all output collected. */
  async status(): Promise<Deno.CommandStatus> {
    const status = await this.child.status;
    await this.#done;
    return status;
  }

  /** Sends a signal (if still running) and waits for the exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
    return await this.status();
  }
}

/** Runs a command to completion and returns its status and output. */
export async function run(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
) {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1", ...options.env },
    cwd: options.cwd ?? Deno.cwd(),
    stdin: "null",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** Sends raw bytes to a TCP port and returns the response head (or what came within `ms`). */
export async function rawExchange(port: number, request: string, ms = 2000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let closed = false;
  const close = () => {
    if (!closed) conn.close();
    closed = true;
  };
  const timer = setTimeout(close, ms);
  let text = "";
  try {
    await conn.write(new TextEncoder().encode(request));
    const buffer = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
  } catch (error) {
    if (!closed) throw error; // the timer closed it: return what came
  } finally {
    clearTimeout(timer);
    close();
  }
  return text;
}

/** A WebSocket upgrade request, with headers to override or drop (value null). */
export function upgradeRequest(path = "/", headers: Record<string, string | null> = {}): string {
  const all: Record<string, string | null> = {
    host: "127.0.0.1",
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
    ...headers,
  };
  const lines = Object.entries(all).filter(([, value]) => value !== null).map(([name, value]) =>
    `${name}: ${value}`
  );
  return `GET ${path} HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n`;
}

/**
 * One masked client frame (RFC 6455 §5.2): the given opcode and payload, FIN set unless `fin`
 * is false (a fragment). `plain` uses an all-zero masking key, so a large payload goes as it is
 * without a copy loop.
 */
export function clientFrame(
  opcode: number,
  payload: Uint8Array,
  { fin = true, plain = false } = {},
): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = new Uint8Array(header + 4 + length);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length < 65536) {
    frame[1] = 0x80 | 126;
    new DataView(frame.buffer).setUint16(2, length);
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  if (plain) {
    frame.set(payload, header + 4);
    return frame;
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, header);
  for (let i = 0; i < length; i++) frame[header + 4 + i] = payload[i]! ^ mask[i % 4]!;
  return frame;
}

/**
 * A WebSocket client on a bare TCP connection: it completes the handshake and then does
 * only what the test says — send raw frames, or never read again (a slow or dead peer).
 */
export class RawSocket {
  private constructor(readonly conn: Deno.TcpConn, readonly head: string) {}

  static async open(port: number, path = "/"): Promise<RawSocket> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode(upgradeRequest(path)));
    let head = "";
    const buffer = new Uint8Array(1);
    // Byte by byte, so that nothing after the handshake is consumed.
    while (!head.endsWith("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`closed during the handshake: ${head}`);
      head += String.fromCharCode(buffer[0]!);
    }
    if (!head.startsWith("HTTP/1.1 101")) throw new Error(`handshake refused: ${head}`);
    return new RawSocket(conn, head);
  }

  async send(opcode: number, payload: Uint8Array): Promise<void> {
    await this.conn.write(clientFrame(opcode, payload));
  }

  /**
   * Reads until the server ends the connection or `ms` pass. `ended` says whether the
   * server ended it; `code` is the close frame's code, if one came.
   */
  async readUntilClosed(ms = 5000): Promise<{ ended: boolean; code: number | undefined }> {
    const chunks: number[] = [];
    const buffer = new Uint8Array(65536);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, ms);
    try {
      for (;;) {
        const n = await this.conn.read(buffer);
        if (n === null) break;
        chunks.push(...buffer.subarray(0, n));
      }
    } catch {
      // closed by the timer, or reset by the server
    } finally {
      clearTimeout(timer);
    }
    return { ended: !timedOut, code: closeCode(chunks) };
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** The code of the first close frame (opcode 8) among unmasked server frames. */
function closeCode(chunks: number[]): number | undefined {
  for (let i = 0; i < chunks.length;) {
    const opcode = chunks[i]! & 0x0f;
    let length = chunks[i + 1]! & 0x7f;
    let offset = i + 2;
    if (length === 126) length = (chunks[i + 2]! << 8) | chunks[i + 3]!, offset = i + 4;
    else if (length === 127) {
      length = Number(
        new DataView(new Uint8Array(chunks.slice(i + 2, i + 10)).buffer).getBigUint64(0),
      );
      offset = i + 10;
    }
    if (opcode === 8 && length >= 2) return (chunks[offset]! << 8) | chunks[offset + 1]!;
    i = offset + length;
  }
  return undefined;
}

/** Resident memory of a process, in MiB, from /proc. */
export function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

/** A clock whose timers run only when a test advances it (tests of the order and the feed). */
export class FakeClock {
  now = 0;
  #timers = new Map<number, { at: number; run: () => void }>();
  #next = 1;

  later(run: () => void, ms: number): number {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, run });
    return id;
  }

  cancel(id: unknown): void {
    this.#timers.delete(id as number);
  }

  get pending(): number {
    return this.#timers.size;
  }

  /** Moves time on by `ms`, running every timer that comes due, in order. */
  advance(ms: number): void {
    const end = this.now + ms;
    while (true) {
      const due = [...this.#timers].filter(([, t]) =>
        t.at <= end
      ).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].run();
    }
    this.now = end;
  }
}

/** The HS256 secret the tests' servers verify signed tokens with (`jwtSecret`). */
export const TEST_JWT_SECRET = "0123456789abcdef0123456789abcdef-test-secret";

/**
 * A signed token for the tests: alice's (`sub` u-alice), valid for `ttl` seconds, signed with
 * {@link TEST_JWT_SECRET} unless another `key` and `alg` are given; `claims` over those defaults.
 */
export async function signedToken(
  claims: Record<string, unknown> = {},
  {
    key = new TextEncoder().encode(TEST_JWT_SECRET) as Uint8Array | CryptoKey,
    alg = "HS256",
    ttl = 3600,
  } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({ sub: "u-alice", name: "alice", exp: now + ttl, ...claims })
    .setProtectedHeader({ alg })
    .sign(key);
}

/**
 * A store for hub tests: reads held until released (`holding`) or failing (`fail`); appends refused
 * as after a reset (`stale`, until `refresh()` moves it to epoch e2) or stalled (`stall`: the hub
 * hears `Unconfirmed`, and `answer()` settles it); the epoch can be changed.
 */
export class TestStore implements HistoryStore {
  inner = new MemoryStore();
  epoch = "e1";
  holding = false;
  stale = false;
  stall = false;
  fail = false;
  /** Appends fail (the store is unreachable). */
  failAppend = false;
  answer: (() => void) | undefined;
  #waiting: (() => void)[] = [];
  append(room: string, draft: Draft, key?: string): Stored | Promise<Stored> {
    if (this.stale) return Promise.reject(new StoreReset("the shared store was reset"));
    if (this.failAppend) return Promise.reject(new Error("store unreachable"));
    const stored: Stored = { ...this.inner.append(room, draft, key), epoch: this.epoch };
    if (!this.stall) return stored;
    const later = new Promise<Stored>((resolve) => this.answer = () => resolve(stored));
    throw new Unconfirmed("the store did not answer in time", later);
  }
  #read<T>(read: () => T): T | Promise<T> {
    if (this.fail) return Promise.reject(new Error("store unreachable"));
    if (!this.holding) return read();
    return new Promise<T>((resolve) => this.#waiting.push(() => resolve(read())));
  }
  release(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const answer of waiting) answer();
  }
  latest(room: string, limit: number, before?: number) {
    return this.#read(() => this.inner.latest(room, limit, before));
  }
  after(room: string, since: number, budget?: number) {
    return this.#read(() => this.inner.after(room, since, budget));
  }
  head(room: string) {
    return this.#read(() => this.inner.head(room));
  }
  refresh(): void {
    if (!this.stale) return;
    this.stale = false;
    this.epoch = "e2";
  }
  close(): void {}
}
