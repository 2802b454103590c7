import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, resolveOptions } from "../lib/ops/config.ts";

Deno.test("resolveOptions() fills in the defaults: port 8080 on every interface", () => {
  const options = resolveOptions();
  assert.equal(options.port, 8080);
  assert.equal(options.hostname, undefined);
  assert.deepEqual(options, { ...DEFAULTS });
});

Deno.test("resolveOptions() names the option, the bad value and what is allowed", () => {
  assert.throws(() => resolveOptions({ port: 70000 }), {
    name: "ConfigError",
    message: "'port' must be a whole number from 0 to 65535, got 70000",
  });
  assert.throws(() => resolveOptions({ port: 1.5 }), ConfigError);
  assert.throws(() => resolveOptions({ hostname: "two words" }), /'hostname' must be a host name/);
  assert.throws(
    () => resolveOptions({ defaultRoom: "no/slash" }),
    /'defaultRoom' must be 1-32 letters/,
  );
  assert.throws(
    () => resolveOptions({ maxMessageBytes: 0 }),
    /'maxMessageBytes' must be a whole number from 64/,
  );
  assert.throws(
    () => resolveOptions({ ratePerSecond: 0 }),
    /'ratePerSecond' must be a number above 0, got 0/,
  );
  assert.throws(
    () => resolveOptions({ maxConnections: 0 }),
    /'maxConnections' must be a whole number 1 or more, got 0/,
  );
  assert.throws(
    () => resolveOptions({ idleTimeout: -1 }),
    /'idleTimeout' must be a whole number from 0 to 3600/,
  );
  assert.throws(
    () => resolveOptions({ allowOrigins: ["example.com"] }),
    /'allowOrigins' entries must be '\*' or an origin/,
  );
  assert.throws(() => resolveOptions({ token: "short" }), /'token' must be 8-256 letters/);
  assert.throws(() => resolveOptions({ cert: "PEM" }), /'cert' and 'key' go together/);
  assert.throws(
    () => resolveOptions({ log: "xml" as "text" }),
    /'log' must be "text" or "json", got "xml"/,
  );
});
