import assert from "node:assert/strict";
import { createLogger } from "../lib/base/log.ts";

const now = () => new Date("2026-11-26T12:00:00.000Z");

Deno.test("createLogger() writes text lines with quoted values that cannot break the line", () => {
  const lines: string[] = [];
  const log = createLogger({ now, write: (line) => lines.push(line) });
  log.info("connected", {
    id: "c1",
    address: "127.0.0.1",
    reason: "bye\nforged line",
    skipped: undefined,
  });
  assert.deepEqual(lines, [
    '2026-11-26T12:00:00.000Z INFO  connected id=c1 address=127.0.0.1 reason="bye\\nforged line"',
  ]);
});

Deno.test("createLogger() writes one JSON object per line, and --quiet drops info", () => {
  const lines: [string, string][] = [];
  const log = createLogger({
    now,
    format: "json",
    quiet: true,
    write: (line, level) => lines.push([level, line]),
  });
  log.info("connected", { id: "c1" });
  log.warn("slow consumer", { id: "c2", bytes: 5 });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]![0], "warn");
  assert.deepEqual(JSON.parse(lines[0]![1]), {
    time: "2026-11-26T12:00:00.000Z",
    level: "warn",
    msg: "slow consumer",
    id: "c2",
    bytes: 5,
  });
});
