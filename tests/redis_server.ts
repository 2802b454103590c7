/**
 * A real `redis-server` for tests, started from PATH on a free port. Where it is missing, the
 * tests that need it are skipped with a loud reason on a laptop, and fail under CI=true.
 */

/** Whether this machine has redis-server; under CI its absence is an error, never a skip. */
export function haveRedis(): boolean {
  const found = which("redis-server");
  if (!found && Deno.env.get("CI") === "true") {
    throw new Error("redis-server is not installed, and CI=true: .ci/run must install it");
  }
  if (!found) {
    console.warn(
      "%cSKIPPING Redis tests: redis-server is not on PATH (apt-get install redis-server)",
      "color: yellow; font-weight: bold",
    );
  }
  return found;
}

function which(command: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${command}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** A free TCP port on loopback (free when asked; good enough for tests). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A redis-server process with no persistence, on its own port. */
export class RedisServer {
  readonly port: number;
  /** Where it keeps its snapshot (`SAVE` writes it, a restart loads it); none by default. */
  readonly dir: string | undefined;
  #child: Deno.ChildProcess | undefined;

  /** More redis-server arguments (e.g. `--cluster-enabled yes`). */
  readonly #extra: string[];

  private constructor(port: number, dir?: string, extra: string[] = []) {
    this.port = port;
    this.dir = dir;
    this.#extra = extra;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The process's id while it runs (for its CPU time). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  static async start(port = freePort(), dir?: string, extra: string[] = []): Promise<RedisServer> {
    const server = new RedisServer(port, dir, extra);
    await server.restart();
    return server;
  }

  /** Starts (again, on the same port) and waits until it answers. */
  async restart(): Promise<void> {
    this.#child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        ...(this.dir ? ["--dir", this.dir, "--dbfilename", "dump.rdb"] : []),
        ...this.#extra,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      try {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        await conn.write(new TextEncoder().encode("PING\r\n"));
        const buffer = new Uint8Array(16);
        const n = await conn.read(buffer);
        conn.close();
        if (n && new TextDecoder().decode(buffer.subarray(0, n)).startsWith("+PONG")) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`redis-server did not start on port ${this.port}`);
  }

  /** Kills it at once (SIGKILL), like a crash. */
  async kill(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child) return;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  }

  /** Stops (SIGSTOP) or resumes (SIGCONT) the process: a stall, with every connection left open. */
  freeze(frozen: boolean): void {
    this.#child?.kill(frozen ? "SIGSTOP" : "SIGCONT");
  }

  /** Sends one command and returns the raw reply (enough for FLUSHALL and the like). */
  async command(...args: string[]): Promise<string> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      const body = `*${args.length}\r\n` +
        args.map((a) => `$${new TextEncoder().encode(a).length}\r\n${a}\r\n`).join("");
      await conn.write(new TextEncoder().encode(body));
      const buffer = new Uint8Array(65536);
      const n = await conn.read(buffer);
      return new TextDecoder().decode(buffer.subarray(0, n ?? 0));
    } finally {
      conn.close();
    }
  }
}
