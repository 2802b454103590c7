/**
 * The hubs' protocol with one another (lib/cluster/cluster.ts), in-process: clusters on a fake shared
 * bus that delivers when the test says, and a fake clock.
 */

import assert from "node:assert/strict";
import type { Broker, Envelope } from "../lib/cluster/broker.ts";
import { Cluster } from "../lib/cluster/cluster.ts";
import type { Change } from "../lib/cluster/peers.ts";

/** A shared bus: what is published waits in a queue until `flush()`, unless dropped. */
class Bus {
  queue: Envelope[] = [];
  members: { origin: string; receive: (e: Envelope) => void }[] = [];
  drop: (e: Envelope) => boolean = () => false;

  broker(origin: string): Broker {
    const queue = (envelope: Envelope) => {
      if (!this.drop(envelope)) this.queue.push(envelope);
    };
    return {
      kind: "fake",
      origin,
      shared: true,
      status: { up: true },
      subscribe() {},
      publish: queue,
      close: () => Promise.resolve(),
    };
  }

  flush(): void {
    while (this.queue.length > 0) {
      const envelope = this.queue.shift()!;
      for (const member of this.members) {
        if (member.origin !== envelope.origin) member.receive(envelope);
      }
    }
  }
}

/** A hub of the test: its rooms, and what it was told of the others. */
function hub(bus: Bus, origin: string, clock: { now: number }) {
  const rooms: Record<string, string[]> = {};
  const told: string[] = [];
  let seq = 0;
  const cluster = new Cluster(bus.broker(origin), {
    snapshot: () => rooms,
    joined: (c: Change) => told.push(`+${c.name}@${c.room}`),
    left: (c: Change) => told.push(`-${c.name}@${c.room}`),
  }, { now: () => clock.now, heartbeatMs: 1_000_000, peerTtlMs: 7000 });
  bus.members.push({
    origin,
    receive: (e) => {
      if (e.kind === "joined") cluster.change(e.origin, e.seq, e.room, e.name);
      else if (e.kind === "left") cluster.change(e.origin, e.seq, e.room, undefined, e.name);
      else if (
        e.kind === "heartbeat" || e.kind === "hello" || e.kind === "snapshot" || e.kind === "bye"
      ) {
        cluster.control(e);
      }
    },
  });
  const join = (room: string, name: string) => {
    (rooms[room] ??= []).push(name);
    seq = cluster.nextSeq();
    bus.broker(origin).publish({ kind: "joined", origin, room, name, seq, ts: clock.now });
  };
  return { cluster, rooms, told, join, seq: () => seq };
}

Deno.test("cluster: a new hub's hello brings it everyone's members; changes then flow one by one", () => {
  const bus = new Bus();
  const clock = { now: 0 };
  const a = hub(bus, "a", clock);
  a.rooms.r = ["alice"];
  const b = hub(bus, "b", clock);
  b.cluster.hello();
  bus.flush();
  assert.deepEqual(b.cluster.view.names("r"), ["alice"]);
  assert.deepEqual(b.told, [], "members a hub had before we first heard of it are not news");
  a.join("r", "carol");
  bus.flush();
  assert.deepEqual(b.cluster.view.names("r"), ["alice", "carol"]);
  assert.deepEqual(a.cluster.view.names("r"), []);
  b.cluster.stop();
  bus.flush();
});

Deno.test("cluster: a lost change is noticed at the next one (or heartbeat), and a snapshot repairs the view", () => {
  const bus = new Bus();
  const clock = { now: 0 };
  const a = hub(bus, "a", clock);
  const b = hub(bus, "b", clock);
  b.cluster.hello();
  bus.flush();
  bus.drop = (e) => e.kind === "joined" && e.name === "lost";
  a.join("r", "lost");
  bus.flush();
  bus.drop = () => false;
  assert.deepEqual(b.cluster.view.names("r"), []);
  a.cluster.beat(); // its heartbeat carries a number b has not seen: b asks a for a snapshot
  bus.flush();
  assert.deepEqual(b.cluster.view.names("r"), ["lost"]);
  assert.deepEqual(b.told, ["+lost@r"], "the repaired member is told as having come");
});

Deno.test("cluster: a hub that says bye, or goes silent past the time-to-live, takes its members with it", () => {
  const bus = new Bus();
  const clock = { now: 0 };
  const a = hub(bus, "a", clock);
  const b = hub(bus, "b", clock);
  const c = hub(bus, "c", clock);
  for (const h of [a, b, c]) h.cluster.hello();
  bus.flush();
  a.join("r", "alice");
  b.join("r", "bob");
  bus.flush();
  assert.deepEqual(c.cluster.view.names("r").sort(), ["alice", "bob"]);
  a.cluster.stop(); // bye
  bus.flush();
  assert.deepEqual(c.cluster.view.names("r"), ["bob"]);
  assert.ok(c.told.includes("-alice@r"));
  clock.now = 6000;
  c.cluster.beat();
  assert.deepEqual(c.cluster.view.names("r"), ["bob"], "not before the time-to-live");
  clock.now = 7001; // b has been silent since 0
  c.cluster.beat();
  assert.deepEqual(c.cluster.view.names("r"), []);
  assert.ok(c.told.includes("-bob@r"));
  assert.equal(c.cluster.view.size, 0);
});

Deno.test("cluster: a hub dropped for silence that comes back is announced, whether its snapshot or its heartbeat arrives first", () => {
  for (const first of ["snapshot", "heartbeat"] as const) {
    const bus = new Bus();
    const clock = { now: 0 };
    const a = hub(bus, "a", clock);
    const b = hub(bus, "b", clock);
    for (const h of [a, b]) h.cluster.hello();
    bus.flush();
    b.join("r", "bob");
    bus.flush();
    clock.now = 7001; // b silent past the time-to-live (a stalled bus)
    a.cluster.beat();
    bus.queue.length = 0; // a's heartbeat went nowhere: the bus was down
    assert.ok(a.told.includes("-bob@r"));
    a.told.length = 0;
    // The bus is back: a says hello (back from an outage), b beats; either may arrive first.
    if (first === "snapshot") {
      a.cluster.hello();
      bus.flush(); // b answers with a snapshot, before any heartbeat of b's
      b.cluster.beat();
    } else {
      b.cluster.beat();
      bus.flush(); // a asks b for a snapshot
    }
    bus.flush();
    assert.deepEqual(a.told, ["+bob@r"], `bob is back (${first} first)`);
    assert.deepEqual(a.cluster.view.names("r"), ["bob"]);
  }
});
