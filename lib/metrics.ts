/**
 * Counters for `/metrics` (Prometheus text format 0.0.4) and `/healthz`. Plain fields,
 * incremented where things happen; rendering is the only clever part.
 */

/** Point-in-time values the app reads when it renders. */
export interface Gauges {
  connections: number;
  rooms: number;
  uptimeSeconds: number;
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
    const lines: string[] = [];
    const metric = (
      name: string,
      type: "counter" | "gauge",
      help: string,
      samples: [string, number][],
    ) => {
      lines.push(`# HELP natter_${name} ${help}`, `# TYPE natter_${name} ${type}`);
      for (const [labels, value] of samples) lines.push(`natter_${name}${labels} ${value}`);
    };
    const labelled = (key: string, map: Map<string, number>): [string, number][] =>
      [...map].map(([label, value]) => [`{${key}="${label}"}`, value]);
    metric("connections", "gauge", "Open chat connections.", [["", gauges.connections]]);
    metric("rooms", "gauge", "Rooms with at least one member.", [["", gauges.rooms]]);
    metric("uptime_seconds", "gauge", "Seconds since the server started.", [[
      "",
      gauges.uptimeSeconds,
    ]]);
    metric("connections_opened_total", "counter", "Chat connections accepted.", [[
      "",
      this.connectionsOpened,
    ]]);
    metric("messages_in_total", "counter", "Frames received from clients.", [[
      "",
      this.messagesIn,
    ]]);
    metric("messages_out_total", "counter", "Frames sent to clients.", [["", this.messagesOut]]);
    metric("deliveries_total", "counter", "Events delivered to a member.", [["", this.deliveries]]);
    metric("bytes_in_total", "counter", "Bytes of frames received (UTF-16 code units).", [[
      "",
      this.bytesIn,
    ]]);
    metric("bytes_out_total", "counter", "Bytes of frames sent (UTF-16 code units).", [[
      "",
      this.bytesOut,
    ]]);
    metric("rate_limited_total", "counter", "Frames refused by the rate limit.", [[
      "",
      this.rateLimited,
    ]]);
    metric("slow_consumers_total", "counter", "Connections dropped as too slow.", [[
      "",
      this.slowConsumers,
    ]]);
    metric(
      "closes_total",
      "counter",
      "Connections closed, by reason.",
      labelled("reason", this.closes),
    );
    metric(
      "refused_total",
      "counter",
      "Upgrades refused, by reason.",
      labelled("reason", this.refused),
    );
    return lines.join("\n") + "\n";
  }
}
