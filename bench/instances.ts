/**
 * Several natter instances and one Redis on this machine, for the cross-instance benchmarks
 * (bench/scoping.ts, bench/spread.ts): a Redis without persistence on a free port, instances
 * started with `--redis`, and Redis's own counters (commands by name, bytes through it).
 */

import { BENCH_OPTIONS } from "./harness.ts";

/** Whether redis-server is on PATH; the benchmarks that need it skip without it. */
export async function haveRedisServer(): Promise<boolean> {
  try {
    await new Deno.Command("redis-server", { args: ["--version"], stdout: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts a process and waits for a line matching `ready` on its stdout. */
export async function launch(command: string, args: string[], ready: RegExp) {
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${command} exited: ${text}`);
    text += value;
    const match = ready.exec(text);
    if (match) {
      (async () => {
        while (!(await reader.read()).done);
      })();
      return { child, match };
    }
  }
}

/** A Redis without persistence on a free port. */
export async function startRedis() {
  const port = freePort();
  const { child } = await launch(
    "redis-server",
    ["--port", String(port), "--save", "", "--appendonly", "no"],
    /Ready to accept connections/,
  );
  return { port, child, url: `redis://127.0.0.1:${port}` };
}

/** A natter instance (of the checkout at `root`) on a free port, sharing `redisUrl`. */
export async function startInstance(root: string, redisUrl: string) {
  const { child, match } = await launch(
    Deno.execPath(),
    ["run", "-A", `${root}main.ts`, ...BENCH_OPTIONS, "--redis", redisUrl],
    /listening on http:\/\/[^\s]+:(\d+)\//,
  );
  return { child, port: Number(match[1]) };
}

/** Redis's counters: calls per command, and bytes in and out (INFO commandstats, stats). */
export async function redisCounters(
  port: number,
): Promise<{ calls: Record<string, number>; bytes: number }> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-p", String(port), "INFO", "all"],
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const calls: Record<string, number> = {};
  for (const m of text.matchAll(/^cmdstat_(\S+):calls=(\d+)/gm)) calls[m[1]!] = Number(m[2]);
  let bytes = 0;
  for (const key of ["total_net_input_bytes", "total_net_output_bytes"]) {
    bytes += Number(new RegExp(`^${key}:(\\d+)`, "m").exec(text)?.[1] ?? 0);
  }
  return { calls, bytes };
}

/** Commands per message between two readings of {@link redisCounters}. */
export function perMessage(
  before: Record<string, number>,
  after: Record<string, number>,
  messages: number,
): Record<string, number> {
  const result: Record<string, number> = {};
  for (const [name, calls] of Object.entries(after)) {
    const more = calls - (before[name] ?? 0);
    if (more > 0 && name !== "info" && name !== "ping") {
      result[name] = Math.round((more / messages) * 100) / 100;
    }
  }
  return result;
}

/** Kills every process given, and waits for them. */
export async function stopAll(children: Deno.ChildProcess[]): Promise<void> {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
    await child.status;
  }
}
