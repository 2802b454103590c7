/**
 * Counters for `/metrics` (Prometheus text format 0.0.4) and `/healthz`. Plain fields,
 * incremented where things happen; rendering is the only clever part.
 */

/** Point-in-time values the app reads when it renders. */
export interface Gauges {
  connections: number;
  rooms: number;
  uptimeSeconds: number;
  /** 1 while the shared bus (BroadcastChannel or Redis) reaches the other hubs, else 0. */
  busUp: number;
  /** Other hubs (workers or instances) heard from. */
  busPeers: number;
  /** Resident memory, the budget, and 1 while over it. */
  memoryBytes: number;
  memoryBudgetBytes: number;
  memoryOver: number;
  /** Slots kept by dropped slow consumers whose kernel sockets may still hold data. */
  lingering: number;
  /** The door's TCP connections (open, waiting for a request, the cap), under `deno run`. */
  tcpOpen?: number;
  /** The in-memory history's rooms and bytes (absent with SQLite or Redis). */
  historyRooms?: number;
  historyBytes?: number;
  tcpPending?: number;
  tcpBudget?: number;
}

/** One metric: its name, type, help and samples (labels, value). */
type Row = [string, "counter" | "gauge", string, [string, number][]];

/** What natter counts. */
export class Metrics {
  connectionsOpened = 0;
  messagesIn = 0;
  messagesOut = 0;
  deliveries = 0;
  bytesIn = 0;
  bytesOut = 0;
  rateLimited = 0;
  slowConsumers = 0;
  /** Upgrades whose client went away before the socket opened. */
  upgradesAbandoned = 0;
  /** Connections dropped because the process was over its memory budget. */
  shed = 0;
  /** Times the listener stopped accepting (descriptors ran out) and listened again. */
  acceptStalls = 0;
  /** Connections closed, by reason. */
  readonly closes = new Map<string, number>();
  /** Upgrades refused before a socket existed, by reason. */
  readonly refused = new Map<string, number>();

  /** Counts one occurrence under a label. */
  static bump(map: Map<string, number>, label: string): void {
    map.set(label, (map.get(label) ?? 0) + 1);
  }

  /** The Prometheus exposition text. */
  render(gauges: Gauges): string {
    const plain = (value: number): [string, number][] => [["", value]];
    const labelled = (key: string, map: Map<string, number>): [string, number][] =>
      [...map].map(([label, value]) => [`{${key}="${label}"}`, value]);
    const table: Row[] = [
      ["connections", "gauge", "Open chat connections.", plain(gauges.connections)],
      ["rooms", "gauge", "Rooms with at least one member.", plain(gauges.rooms)],
      ["uptime_seconds", "gauge", "Seconds since the server started.", plain(gauges.uptimeSeconds)],
      [
        "bus_up",
        "gauge",
        "1 while events reach the other workers or instances (always 1 alone).",
        plain(gauges.busUp),
      ],
      ["bus_peers", "gauge", "Other workers or instances heard from.", plain(gauges.busPeers)],
      ["memory_bytes", "gauge", "Resident memory of the process.", plain(gauges.memoryBytes)],
      [
        "memory_budget_bytes",
        "gauge",
        "The memory budget (--max-memory).",
        plain(gauges.memoryBudgetBytes),
      ],
      [
        "memory_over_budget",
        "gauge",
        "1 while over the memory budget (new connections are refused).",
        plain(gauges.memoryOver),
      ],
      [
        "lingering_slots",
        "gauge",
        "Slots still held for dropped slow consumers (their kernel sockets may hold data).",
        plain(gauges.lingering),
      ],
      ...(gauges.historyRooms === undefined ? [] : [
        [
          "history_rooms",
          "gauge",
          "Rooms the in-memory history knows: those holding messages, and those with members.",
          plain(gauges.historyRooms),
        ] satisfies Row,
        [
          "history_bytes",
          "gauge",
          "Bytes the in-memory history counts against its budget.",
          plain(gauges.historyBytes ?? 0),
        ] satisfies Row,
      ]),
      ...(gauges.tcpOpen === undefined ? [] : [
        [
          "tcp_open",
          "gauge",
          "Open TCP connections, chat and not.",
          plain(gauges.tcpOpen),
        ] satisfies Row,
        [
          "tcp_pending",
          "gauge",
          "TCP connections that have not completed a request or upgrade.",
          plain(gauges.tcpPending ?? 0),
        ] satisfies Row,
        [
          "tcp_budget",
          "gauge",
          "The cap on open TCP connections in force.",
          plain(gauges.tcpBudget ?? 0),
        ] satisfies Row,
      ]),
      [
        "connections_opened_total",
        "counter",
        "Chat connections accepted.",
        plain(this.connectionsOpened),
      ],
      ["messages_in_total", "counter", "Frames received from clients.", plain(this.messagesIn)],
      ["messages_out_total", "counter", "Frames sent to clients.", plain(this.messagesOut)],
      ["deliveries_total", "counter", "Events delivered to a member.", plain(this.deliveries)],
      ["bytes_in_total", "counter", "UTF-8 bytes of frames received.", plain(this.bytesIn)],
      ["bytes_out_total", "counter", "UTF-8 bytes of frames sent.", plain(this.bytesOut)],
      [
        "rate_limited_total",
        "counter",
        "Frames refused by the rate limit.",
        plain(this.rateLimited),
      ],
      [
        "slow_consumers_total",
        "counter",
        "Connections dropped as too slow.",
        plain(this.slowConsumers),
      ],
      [
        "upgrades_abandoned_total",
        "counter",
        "Upgrades whose client went away before the socket opened.",
        plain(this.upgradesAbandoned),
      ],
      [
        "shed_total",
        "counter",
        "Connections dropped because the process was over its memory budget.",
        plain(this.shed),
      ],
      [
        "accept_stalls_total",
        "counter",
        "Times the listener stopped accepting (out of descriptors) and listened again.",
        plain(this.acceptStalls),
      ],
      [
        "closes_total",
        "counter",
        "Connections closed, by reason.",
        labelled("reason", this.closes),
      ],
      [
        "refused_total",
        "counter",
        "Connections, upgrades or API requests refused, by reason.",
        labelled("reason", this.refused),
      ],
    ];
    const lines: string[] = [];
    for (const [name, type, help, samples] of table) {
      lines.push(`# HELP natter_${name} ${help}`, `# TYPE natter_${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`natter_${name}${labels} ${value}`);
    }
    return lines.join("\n") + "\n";
  }
}
