/**
 * natter's HTTP routes besides the chat and its files (lib/app.ts dispatches to them):
 * `/healthz`, `/metrics`, `/auth` and the hint at `/ws`; and the plain-text and JSON answers
 * the rest of the app builds its own on (refusals, 404, 405).
 */

import type { HistoryStore } from "../store/history.ts";
import type { Hub } from "../chat/hub.ts";
import { MemoryStore } from "../store/memory.ts";
import type { Metrics } from "../base/metrics.ts";
import type { MemoryGuard } from "./pressure.ts";
import { authorized } from "./token.ts";
import { VERSION } from "../base/version.ts";

/** What the listener in front (the door, lib/door/door.ts) reports to `/healthz` and `/metrics`. */
export interface DoorStatus {
  /** Open TCP connections: pending and upgraded. */
  sockets: number;
  /** Connections that are not WebSockets (yet). */
  pending: number;
  /** The cap on open TCP connections in force (learned when descriptors ran out). */
  budget: number;
  /** Why the door is degraded, if it was in the last few seconds. */
  trouble: string | undefined;
}

/** What `/healthz` and `/metrics` report on, read when one is asked for. */
export interface Readings {
  hub: Hub;
  store: HistoryStore;
  guard: MemoryGuard;
  metrics: Metrics;
  /** Seconds since the app started. */
  uptimeSeconds: number;
  /** Connection slots kept for dropped slow readers (lib/transport/gate.ts). */
  lingering: number;
  /** Shutdown has begun. */
  draining: boolean;
  /** The listener in front, when there is one (the door). */
  door: DoorStatus | undefined;
}

/** The paths answered here. */
export const ROUTES = new Set(["/healthz", "/metrics", "/auth"]);

const TEXT = { "content-type": "text/plain; charset=utf-8" };

/** A JSON answer that no cache keeps. */
export function json(request: Request, value: unknown, status = 200): Response {
  return new Response(request.method === "HEAD" ? null : JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-store" },
  });
}

export function plain(
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(body + "\n", { status, headers: { ...TEXT, ...headers } });
}

/**
 * 200 "ok"; 503 "stopping" while draining, or "degraded" while the shared bus is down (this
 * instance then reaches only its own clients, so a load balancer should prefer others).
 */
export function health(request: Request, r: Readings): Response {
  const { hub, guard } = r;
  const broker = hub.broker;
  const bus = broker.status;
  const front = r.door;
  const problems = [
    ...(bus.up ? [] : ["bus"]),
    ...(guard.over ? ["memory"] : []),
    ...(front?.trouble ? [front.trouble] : []),
  ];
  const status = r.draining ? "stopping" : problems.length === 0 ? "ok" : "degraded";
  return json(request, {
    status,
    ...(problems.length > 0 ? { problems } : {}),
    version: VERSION,
    uptime: r.uptimeSeconds,
    connections: hub.connections,
    rooms: hub.rooms,
    memory: {
      rssMiB: Math.round(guard.rss / 1048576),
      budgetMiB: Math.round(guard.budget / 1048576),
      // Raised while the allocator keeps freed memory that no connection holds.
      ...(guard.ceiling > guard.budget ? { ceilingMiB: Math.round(guard.ceiling / 1048576) } : {}),
      over: guard.over,
    },
    ...(front
      ? { tcp: { open: front.sockets, pending: front.pending, budget: front.budget } }
      : {}),
    ...(r.lingering > 0 ? { lingering: r.lingering } : {}),
    bus: {
      kind: broker.kind,
      // Which worker or instance answered: its origin tag on the bus.
      instance: broker.origin,
      up: bus.up,
      ...(bus.reason === undefined ? {} : { reason: bus.reason }),
      peers: hub.peers,
    },
  }, status === "ok" ? 200 : 503);
}

export function metricsPage(request: Request, r: Readings): Response {
  const { hub, guard, store } = r;
  const front = r.door;
  const body = r.metrics.render({
    connections: hub.connections,
    rooms: hub.rooms,
    uptimeSeconds: r.uptimeSeconds,
    busUp: hub.broker.status.up ? 1 : 0,
    busPeers: hub.peers,
    memoryBytes: guard.rss,
    memoryBudgetBytes: guard.budget,
    memoryOver: guard.over ? 1 : 0,
    lingering: r.lingering,
    ...(store instanceof MemoryStore
      ? { historyRooms: store.rooms, historyBytes: store.bytes }
      : {}),
    ...(front
      ? { tcpOpen: front.sockets, tcpPending: front.pending, tcpBudget: front.budget }
      : {}),
  });
  return new Response(request.method === "HEAD" ? null : body, {
    headers: {
      "content-type": "text/plain; version=0.0.4; charset=utf-8",
      "cache-control": "no-store",
    },
  });
}

/** `/auth`: whether this server needs a token, and whether the request presents it. */
export function authPage(request: Request, url: URL, token: string | undefined): Response {
  return json(request, {
    required: token !== undefined,
    accepted: authorized(token, request, url, []),
  });
}

/** `/ws` asked for without an upgrade. */
export function webSocketHint(): Response {
  return plain(
    426,
    'This is natter\'s WebSocket endpoint: connect with new WebSocket("ws://<host>/ws").',
    {
      upgrade: "websocket",
      connection: "Upgrade",
    },
  );
}
