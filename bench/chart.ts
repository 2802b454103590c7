/**
 * Throughput against p99 latency, one SVG per receiver count, from the fan-out benchmark's
 * results (bench/fanout.ts writes them after a sweep). No dependencies: the SVG is written as
 * text. x is deliveries per second (linear, from 0), y the p99 delivery latency at the first
 * receiver (log scale); each server is a polyline through its points in window order, each point
 * labelled with its window (messages in flight).
 *
 *     deno run -A bench/chart.ts bench/last-fanout.json --charts /tmp/charts   (redraw from JSON)
 */

import { parseArgs } from "node:util";

/** One measured point of one server. */
export interface ChartPoint {
  /** Messages in flight. */
  window: number;
  deliveriesPerSecond: number;
  /** Milliseconds. */
  p99: number;
  /** The generator used ≥ 90 % of its core at this point: drawn hollow. */
  generatorLimited?: boolean;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
}

/** The part of bench/fanout.ts's JSON that the charts read. */
export interface FanoutReport {
  date?: string;
  reps?: number;
  seconds?: number;
  servers: string[];
  results: {
    receivers: number;
    window: number;
    /** Per server (older files have each server's figure at the top level of the row). */
    deliveriesPerSecond?: Record<string, number>;
    latencyMs: Record<string, { p50: number; p99: number }>;
    generatorLimited?: string[];
    [server: string]: unknown;
  }[];
}

const WIDTH = 760;
const HEIGHT = 500;
const MARGIN = { left: 84, right: 150, top: 64, bottom: 64 };
const PLOT_W = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_H = HEIGHT - MARGIN.top - MARGIN.bottom;
/** The histogram's resolution (bench/counter.ts): no p99 is below it. */
const MIN_MS = 0.01;
const COLOURS: Record<string, string> = {
  natter: "#1f77b4",
  reference: "#7f7f7f",
  bun: "#e6550d",
};
const SPARE_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#d62728"];

const escape = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
/** Coordinates to two decimals: short and exact enough. */
const fixed = (value: number) => String(Math.round(value * 100) / 100);

/** A round step for about `count` ticks over [0, max]: 1, 2 or 5 times a power of ten. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return step ?? 10 * power;
}

/** 2500000 as 2.5M, 400000 as 400k. */
function short(value: number): string {
  if (value >= 1e6) return `${+(value / 1e6).toPrecision(3)}M`;
  if (value >= 1e3) return `${+(value / 1e3).toPrecision(3)}k`;
  return String(+value.toPrecision(3));
}

/** Milliseconds as a tick label: 0.01, 0.5, 2, 100. */
const ms = (value: number) => String(+value.toPrecision(2));

/** The SVG text of one chart. */
export function fanoutChart(title: string, subtitle: string, series: ChartSeries[]): string {
  const points = series.flatMap((s) => s.points).filter((p) =>
    Number.isFinite(p.deliveriesPerSecond) && Number.isFinite(p.p99)
  );
  const xStep = niceStep(Math.max(1, ...points.map((p) => p.deliveriesPerSecond)) * 1.05, 6);
  const xMax = xStep * Math.ceil(Math.max(1, ...points.map((p) => p.deliveriesPerSecond)) / xStep);
  const ys = points.map((p) => Math.max(MIN_MS, p.p99));
  const yLow = 10 ** Math.floor(Math.log10(Math.min(1, ...ys)));
  const yHigh = 10 ** Math.ceil(Math.log10(Math.max(yLow * 10, ...ys) * 1.0001));
  const x = (value: number) => MARGIN.left + (value / xMax) * PLOT_W;
  const y = (value: number) =>
    MARGIN.top + PLOT_H -
    (Math.log10(Math.max(MIN_MS, value) / yLow) / Math.log10(yHigh / yLow)) * PLOT_H;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" ` +
      `viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<title>${escape(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">` +
      `${escape(title)}</text>`,
    `<text x="${WIDTH / 2}" y="44" text-anchor="middle" fill="#555">${escape(subtitle)}</text>`,
  );

  // Grid and ticks: x every step, y at 1, 2 and 5 of each decade (labelled while there are at
  // most three decades, else only the powers of ten).
  const decades = Math.round(Math.log10(yHigh / yLow));
  out.push(`<g stroke="#e5e5e5" stroke-width="1">`);
  for (let v = 0; v <= xMax + xStep / 2; v += xStep) {
    out.push(
      `<line x1="${fixed(x(v))}" y1="${MARGIN.top}" x2="${fixed(x(v))}" ` +
        `y2="${MARGIN.top + PLOT_H}"/>`,
    );
  }
  const yTicks: number[] = [];
  for (let decade = yLow; decade < yHigh * 1.0001; decade *= 10) {
    for (const m of decade * 1.0001 < yHigh ? [1, 2, 5] : [1]) yTicks.push(decade * m);
  }
  for (const v of yTicks) {
    out.push(
      `<line x1="${MARGIN.left}" y1="${fixed(y(v))}" x2="${MARGIN.left + PLOT_W}" ` +
        `y2="${fixed(y(v))}"/>`,
    );
  }
  out.push(`</g>`);
  out.push(`<g fill="#333">`);
  for (let v = 0; v <= xMax + xStep / 2; v += xStep) {
    out.push(
      `<text x="${fixed(x(v))}" y="${MARGIN.top + PLOT_H + 18}" text-anchor="middle">` +
        `${short(v)}</text>`,
    );
  }
  for (const v of yTicks) {
    const major = Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
    if (!major && decades > 3) continue;
    out.push(
      `<text x="${MARGIN.left - 8}" y="${fixed(y(v) + 4)}" text-anchor="end">${ms(v)}</text>`,
    );
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${PLOT_W}" height="${PLOT_H}" ` +
      `fill="none" stroke="#333"/>`,
    `<text x="${MARGIN.left + PLOT_W / 2}" y="${HEIGHT - 18}" text-anchor="middle">` +
      `deliveries per second (all receivers, median over repetitions)</text>`,
    `<text transform="translate(22 ${MARGIN.top + PLOT_H / 2}) rotate(-90)" ` +
      `text-anchor="middle">p99 latency at the first receiver, ms (log scale)</text>`,
  );

  // The series, then the legend.
  series.forEach((s, index) => {
    const colour = COLOURS[s.name] ?? SPARE_COLOURS[index % SPARE_COLOURS.length]!;
    const drawn = s.points
      .filter((p) => Number.isFinite(p.deliveriesPerSecond) && Number.isFinite(p.p99))
      .sort((a, b) => a.window - b.window);
    out.push(`<g>`);
    if (drawn.length > 1) {
      out.push(
        `<polyline fill="none" stroke="${colour}" stroke-width="2" points="` +
          drawn.map((p) => `${fixed(x(p.deliveriesPerSecond))},${fixed(y(p.p99))}`).join(" ") +
          `"/>`,
      );
    }
    for (const p of drawn) {
      const cx = fixed(x(p.deliveriesPerSecond));
      const cy = fixed(y(p.p99));
      out.push(
        `<circle cx="${cx}" cy="${cy}" r="4" stroke="${colour}" stroke-width="2" ` +
          `fill="${p.generatorLimited ? "white" : colour}">` +
          `<title>${escape(s.name)}, window ${p.window}: ` +
          `${Math.round(p.deliveriesPerSecond)} deliveries/s, p99 ${p.p99.toFixed(2)} ms` +
          `${p.generatorLimited ? " (generator ≥ 90 % of a core)" : ""}</title></circle>`,
        `<text x="${fixed(x(p.deliveriesPerSecond) + 6)}" y="${fixed(y(p.p99) - 6)}" ` +
          `fill="${colour}" font-size="11">${p.window}</text>`,
      );
    }
    out.push(`</g>`);
    const ly = MARGIN.top + 12 + index * 20;
    const lx = MARGIN.left + PLOT_W + 16;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${colour}" ` +
        `stroke-width="2"/>`,
      `<circle cx="${lx + 12}" cy="${ly}" r="4" fill="${colour}"/>`,
      `<text x="${lx + 32}" y="${ly + 4}">${escape(s.name)}</text>`,
    );
  });
  const noteY = MARGIN.top + 12 + series.length * 20 + 8;
  const noteX = MARGIN.left + PLOT_W + 16;
  out.push(
    `<g fill="#555" font-size="11">`,
    `<text x="${noteX}" y="${noteY}">labels: messages</text>`,
    `<text x="${noteX}" y="${noteY + 14}">in flight (window)</text>`,
  );
  if (points.some((p) => p.generatorLimited)) {
    out.push(
      `<text x="${noteX}" y="${noteY + 32}">hollow: generator</text>`,
      `<text x="${noteX}" y="${noteY + 46}">≥ 90 % of a core</text>`,
    );
  }
  out.push(`</g>`, `</svg>`);
  return out.join("\n") + "\n";
}

/** Writes DIR/fanout-N.svg for each receiver count in `report`; returns the paths. */
export async function writeFanoutCharts(report: FanoutReport, dir: string): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const counts = [...new Set(report.results.map((r) => r.receivers))];
  const paths: string[] = [];
  for (const receivers of counts) {
    const rows = report.results.filter((r) => r.receivers === receivers);
    const series = report.servers.map((name) => ({
      name,
      points: rows.map((r) => ({
        window: r.window,
        deliveriesPerSecond: r.deliveriesPerSecond?.[name] ?? Number(r[name]),
        p99: r.latencyMs[name]?.p99 ?? NaN,
        generatorLimited: r.generatorLimited?.includes(name) ?? false,
      })),
    }));
    const about = [
      report.reps !== undefined ? `${report.reps} rep${report.reps === 1 ? "" : "s"}` : "",
      report.seconds !== undefined ? `${report.seconds} s each` : "",
      "64-byte messages",
      report.date ? report.date.slice(0, 10) : "",
    ].filter(Boolean).join(", ");
    const path = `${dir.replace(/\/+$/, "")}/fanout-${receivers}.svg`;
    await Deno.writeTextFile(
      path,
      fanoutChart(`fan-out, ${receivers} receivers: throughput against p99`, about, series),
    );
    paths.push(path);
  }
  return paths;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { charts: { type: "string", default: "bench/" } },
    allowPositionals: true,
  });
  const file = positionals[0] ?? "bench/last-fanout.json";
  const report: FanoutReport = JSON.parse(await Deno.readTextFile(file));
  if (!Array.isArray(report.servers) || report.results.some((r) => !r.latencyMs || !r.window)) {
    throw new Error(`${file} has no servers, windows or latencies: not a sweep by bench/fanout.ts`);
  }
  for (const path of await writeFanoutCharts(report, values.charts)) console.log(`wrote ${path}`);
}
