/**
 * What every benchmark shares: the two servers, starting one pinned to core 0, pinning the
 * load generator to core 1, and small helpers.
 */

const ROOT = new URL("..", import.meta.url).pathname;

export const haveTaskset = (() => {
  try {
    return new Deno.Command("taskset", { args: ["-c", "0", "true"] }).outputSync().success;
  } catch {
    return false;
  }
})();

export interface Server {
  name: string;
  args: string[];
  /** The program to run; Deno itself when absent (then `args` start with a Deno subcommand). */
  command?: string;
}

/** A `bun` binary, for the Bun comparison: BENCH_BUN, else `bun` on PATH, else none. */
export const BUN: string | undefined = (() => {
  const candidates = [Deno.env.get("BENCH_BUN"), "bun"].filter((c): c is string => !!c);
  for (const candidate of candidates) {
    try {
      if (new Deno.Command(candidate, { args: ["--version"] }).outputSync().success) {
        return candidate;
      }
    } catch {
      // not there
    }
  }
  return undefined;
})();

/** Bun's native publish (bench/bun-publish.js), where Bun is installed. */
export const BUN_SERVER: Server | undefined = BUN
  ? { name: "bun", command: BUN, args: [`${ROOT}bench/bun-publish.js`, "--port", "0"] }
  : undefined;

/** natter's options in every benchmark: any free port on loopback, quiet, no rate limit. */
export const BENCH_OPTIONS = [
  "--port",
  "0",
  "--hostname",
  "127.0.0.1",
  "--quiet",
  "--rate",
  "1000000000",
  "--rate-burst",
  "1000000000",
];

export const ALL_SERVERS: Server[] = [
  { name: "reference", args: ["run", "-A", `${ROOT}bench/reference.ts`, "--port", "0"] },
  {
    name: "natter",
    args: [
      "run",
      "-A",
      `${ROOT}main.ts`,
      ...BENCH_OPTIONS,
      "--max-buffered",
      "256MiB",
      "--max-connections",
      "100000",
      "--history",
      "0",
    ],
  },
];

/**
 * Floors for the connect rate (bench/connections.ts `--probes`): the reference's chat over the
 * listener natter's door uses (`node:http`, then the runtime's WebSocket over the node socket),
 * and over a bare `node:net` socket with the request head split by hand. What a connect costs
 * there, before any of natter's own work, is the runtime's price for seeing every connection.
 */
export const PROBE_SERVERS: Server[] = [
  { name: "node-http", args: ["run", "-A", `${ROOT}bench/probe-node-http.ts`] },
  { name: "node-net", args: ["run", "-A", `${ROOT}bench/probe-node-net.ts`] },
];

/**
 * A floor for fan-out on this runtime (bench/fanout.ts `--probes`): the reference's chat with
 * natter's batching and nothing else (bench/probe-batch.ts), under `Deno.serve` and over `node:http`
 * as natter's door.
 */
export const BATCH_PROBES: Server[] = [
  { name: "batch-probe", args: ["run", "-A", `${ROOT}bench/probe-batch.ts`] },
  { name: "batch-node", args: ["run", "-A", `${ROOT}bench/probe-batch.ts`, "--node"] },
];

/**
 * The environment `deno task start` gives natter (the `VAR=value` words before `deno` in
 * deno.json), given to both servers: each runs with the same runtime settings, those that
 * natter's docs tell people to use.
 */
export const SERVER_ENV: Record<string, string> = (() => {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const task: string = config.tasks.start;
  const words = task.slice(0, task.indexOf("deno ")).trim().split(/\s+/).filter(Boolean);
  return Object.fromEntries(words.map((word) => word.split("=", 2) as [string, string]));
})();

export async function start(server: Server): Promise<{ port: number; child: Deno.ChildProcess }> {
  const program = server.command ?? Deno.execPath();
  const command = haveTaskset ? "taskset" : program;
  // BENCH_SERVER_FLAGS adds runtime flags to the server, e.g. --v8-flags=--perf-basic-prof.
  const extra = Deno.env.get("BENCH_SERVER_FLAGS")?.split(" ").filter(Boolean) ?? [];
  // BENCH_NATTER_ARGS adds natter options, e.g. "--history-limit 100", to try a setting.
  const options = server.name === "natter"
    ? Deno.env.get("BENCH_NATTER_ARGS")?.split(" ").filter(Boolean) ?? []
    : [];
  const serverArgs = server.command
    ? server.args
    : [server.args[0]!, ...extra, ...server.args.slice(1), ...options];
  const args = haveTaskset ? ["-c", "0", program, ...serverArgs] : serverArgs;
  const child = new Deno.Command(command, {
    args,
    env: SERVER_ENV,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${server.name} exited before listening`);
    text += value;
    const match = /listening on https?:\/\/[^\s]+:(\d+)\//.exec(text);
    if (match) {
      // Keep draining, so that the server never blocks on a full pipe.
      (async () => {
        while (!(await reader.read()).done);
      })();
      return { port: Number(match[1]), child };
    }
  }
}

export function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
}

/** Counts lines in a frame: a batched frame carries several events. */
export function lines(data: string): number {
  let count = 1;
  for (let i = data.indexOf("\n"); i !== -1; i = data.indexOf("\n", i + 1)) count++;
  return count;
}

/** The middle value. */
export function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

/** Pins this process (the load generator) to core 1, away from the server on core 0. */
export async function pinSelf(): Promise<void> {
  if (!haveTaskset) return;
  await new Deno.Command("taskset", { args: ["-cp", "1", String(Deno.pid)], stdout: "null" })
    .output();
}

/** Runs `measure` against every server, `reps` times, interleaved; the results by server name. */
export async function interleaved<T>(
  reps: number,
  measure: (server: Server) => Promise<T>,
  servers: Server[] = ALL_SERVERS,
): Promise<Record<string, T[]>> {
  const runs: Record<string, T[]> = Object.fromEntries(
    servers.map((server) => [server.name, []]),
  );
  for (let rep = 0; rep < reps; rep++) {
    for (const server of servers) runs[server.name]!.push(await measure(server));
  }
  return runs;
}

/** The median of each of `keys`, per server. */
export function medians<K extends string>(
  runs: Record<string, Record<K, number>[]>,
  keys: K[],
): Record<string, Record<K, number>> {
  return Object.fromEntries(
    Object.entries(runs).map(([name, list]) => [
      name,
      Object.fromEntries(keys.map((key) => [key, median(list.map((run) => run[key]))])) as Record<
        K,
        number
      >,
    ]),
  );
}

/**
 * CPU seconds a process has used so far (Linux: /proc/PID/stat), or NaN where that cannot be
 * read. A server at saturation uses its whole core: less means the load, not it, set the pace.
 */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start at the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
  } catch {
    return NaN;
  }
}
