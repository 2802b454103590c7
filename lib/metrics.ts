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
}

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
    const table: [string, "counter" | "gauge", string, [string, number][]][] = [
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
        "closes_total",
        "counter",
        "Connections closed, by reason.",
        labelled("reason", this.closes),
      ],
      [
        "refused_total",
        "counter",
        "Upgrades refused, by reason.",
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
