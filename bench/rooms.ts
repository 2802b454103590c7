/**
 * Many rooms: does a message cost the same in a server that has seen 10 rooms and one that has
 * seen 250,000? One JSON client walks through new rooms (join, say one line, move on: each room
 * it leaves has no members and one message), and at each checkpoint it measures, in a room of
 * its own, what a message costs the server (its CPU time per message, from /proc, over a few
 * thousand acknowledged messages), what creating a room cost since the last checkpoint, and the
 * server's RSS. natter runs with its default memory budget for history (64 MiB).
 *
 *     deno run -A bench/rooms.ts [--rooms 10,1000,10000,100000,250000] [--messages 3000]
 */

import { parseArgs } from "node:util";
import { ALL_SERVERS, pinSelf, processCpuSeconds, start } from "./harness.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rooms: { type: "string", default: "10,1000,10000,100000,250000" },
    messages: { type: "string", default: "3000" },
    out: { type: "string", default: "bench/last-rooms.json" },
  },
});

const checkpoints = values.rooms.split(",").map(Number);
const messages = Number(values.messages);
if (checkpoints.some((n) => !(n >= 1)) || !(messages >= 100)) {
  console.error("usage: bench/rooms.ts [--rooms N,N,...] [--messages N (at least 100)]");
  Deno.exit(2);
}

/** Server RSS in MiB (Linux /proc). */
function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** A JSON client that sends requests in windows and waits for the last acknowledgement. */
class Client {
  #ws: WebSocket;
  #waiting = new Map<number, () => void>();
  #ref = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      for (const line of String(event.data).split("\n")) {
        const ref = /"ref":(\d+)/.exec(line)?.[1];
        if (ref === undefined) continue;
        const done = this.#waiting.get(Number(ref));
        if (done) {
          this.#waiting.delete(Number(ref));
          done();
        }
      }
    };
  }

  static open(url: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, "natter.v1");
      ws.onopen = () => resolve(new Client(ws));
      ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
  }

  /** Sends `requests` (each gets a ref), at most `window` unanswered at once; resolves when all are. */
  async run(requests: Iterable<Record<string, unknown>>, window = 200): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    for (const request of requests) {
      const ref = ++this.#ref;
      const answered = new Promise<void>((resolve) => this.#waiting.set(ref, resolve));
      inFlight.add(answered);
      answered.then(() => inFlight.delete(answered));
      this.#ws.send(JSON.stringify({ ...request, ref }));
      if (inFlight.size >= window) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  }

  close(): void {
    this.#ws.close();
  }
}

function* newRooms(from: number, to: number): Generator<Record<string, unknown>> {
  for (let i = from; i < to; i++) {
    yield { type: "join", room: `r${i}` };
    yield { type: "say", text: `hello from room ${i}` };
  }
}

function* says(n: number): Generator<Record<string, unknown>> {
  for (let i = 0; i < n; i++) yield { type: "say", text: `probe message ${i}` };
}

await pinSelf();
const natter = ALL_SERVERS.find((server) => server.name === "natter")!;
const { port, child } = await start(natter);
const url = `ws://127.0.0.1:${port}/`;
const walker = await Client.open(`${url}?room=r0`);
const probe = await Client.open(`${url}?room=probe`);
await probe.run(says(500)); // warm up

const rows = [];
let made = 0;
try {
  for (const target of checkpoints) {
    const cpu0 = processCpuSeconds(child.pid);
    const t0 = performance.now();
    await walker.run(newRooms(made, target));
    const roomCpu = processCpuSeconds(child.pid) - cpu0;
    const created = target - made;
    made = target;
    const cpu1 = processCpuSeconds(child.pid);
    const t1 = performance.now();
    await probe.run(says(messages));
    const cpu = processCpuSeconds(child.pid) - cpu1;
    const row = {
      rooms: target,
      messageCpuUs: (cpu * 1e6) / messages,
      messageWallUs: ((performance.now() - t1) * 1000) / messages,
      roomCpuUs: created > 0 ? (roomCpu * 1e6) / created : NaN,
      roomWallUs: created > 0 ? ((t1 - t0) * 1000) / created : NaN,
      rssMiB: rssMiB(child.pid),
    };
    rows.push(row);
    console.log(
      `${String(target).padStart(7)} rooms: a message ${row.messageCpuUs.toFixed(1)} µs CPU ` +
        `(${row.messageWallUs.toFixed(1)} µs wall), a new room ${
          row.roomCpuUs.toFixed(1)
        } µs CPU, ` +
        `RSS ${row.rssMiB.toFixed(0)} MiB`,
    );
  }
} finally {
  walker.close();
  probe.close();
  child.kill("SIGTERM");
  await child.status;
}
const first = rows[0]!;
const last = rows.at(-1)!;
// A new room's cost is read from the second checkpoint on: the first ones include start-up.
const early = rows[1] ?? first;
console.log(
  `at ${last.rooms} rooms against ${first.rooms}: a message costs ` +
    `${(last.messageWallUs / first.messageWallUs).toFixed(2)}× (wall), ` +
    `${(last.messageCpuUs / first.messageCpuUs).toFixed(2)}× (CPU); against ${early.rooms}: ` +
    `a new room ${(last.roomCpuUs / early.roomCpuUs).toFixed(2)}× (CPU); ` +
    `RSS ${first.rssMiB.toFixed(0)} → ${last.rssMiB.toFixed(0)} MiB`,
);
await Deno.writeTextFile(values.out, JSON.stringify({ messages, rows }, null, 2) + "\n");
