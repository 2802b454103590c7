/**
 * A CPU profile of a server started with `--inspect=127.0.0.1:PORT` (BENCH_SERVER_FLAGS), taken
 * through the V8 inspector while a benchmark runs: the functions with the most samples of their
 * own, as a share of all samples. bench/fanout.ts takes one with `--profile PORT`.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
}

/** Starts profiling the inspected process; the returned function stops and summarizes. */
export async function startProfile(port: number): Promise<() => Promise<string>> {
  const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let next = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (e) => {
    const reply = JSON.parse(e.data);
    if (reply.id !== undefined) waiting.get(reply.id)?.(reply.result);
  };
  const call = (method: string, params: unknown = {}) =>
    new Promise<unknown>((resolve) => {
      const id = ++next;
      waiting.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  await call("Profiler.start");
  return async () => {
    const { profile } = await call("Profiler.stop") as { profile: { nodes: ProfileNode[] } };
    ws.close();
    const self = new Map<string, number>();
    let total = 0;
    for (const node of profile.nodes) {
      const hits = node.hitCount ?? 0;
      total += hits;
      const { functionName, url, lineNumber } = node.callFrame;
      const file = url.replace(/^.*\/(lib|bench|ext|node)\//, "$1/");
      const key = `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + hits);
    }
    return [...self]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 30)
      .map(([key, hits]) => `${(100 * hits / total).toFixed(1).padStart(5)}%  ${key}`)
      .join("\n");
  };
}
