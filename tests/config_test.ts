import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, parseCommand, resolveOptions } from "../lib/config.ts";

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
    /'maxMessageBytes' must be a positive/,
  );
});

Deno.test("parseCommand() reads --port, -p, --hostname and -H", () => {
  const run = (args: string[]) => {
    const command = parseCommand(args);
    assert.equal(command.kind, "serve");
    return command.kind === "serve" ? command.options : DEFAULTS;
  };
  assert.equal(run([]).port, 8080);
  assert.equal(run(["--port", "0"]).port, 0);
  assert.equal(run(["-p", "9000"]).port, 9000);
  assert.equal(run(["--port=9001"]).port, 9001);
  assert.equal(run(["--hostname", "127.0.0.1"]).hostname, "127.0.0.1");
  assert.equal(run(["-H", "::1"]).hostname, "::1");
});

Deno.test("parseCommand() reads --help and --version", () => {
  assert.deepEqual(parseCommand(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommand(["-h"]), { kind: "help" });
  assert.deepEqual(parseCommand(["--version"]), { kind: "version" });
  assert.deepEqual(parseCommand(["-V"]), { kind: "version" });
});

Deno.test("parseCommand() uses PORT and HOST, and flags win over them", () => {
  const env = (name: string) =>
    ({ PORT: "7000", HOST: "127.0.0.1" } as Record<string, string>)[name];
  const fromEnv = parseCommand([], env);
  assert.equal(fromEnv.kind === "serve" && fromEnv.options.port, 7000);
  assert.equal(fromEnv.kind === "serve" && fromEnv.options.hostname, "127.0.0.1");
  const flagWins = parseCommand(["--port", "7001"], env);
  assert.equal(flagWins.kind === "serve" && flagWins.options.port, 7001);
});

Deno.test("parseCommand() rejects unknown flags, stray arguments and bad values, listing what is allowed", () => {
  assert.throws(() => parseCommand(["--prot", "1"]), {
    name: "ConfigError",
    message: "unknown option --prot; the options are --port, --hostname, --help, --version",
  });
  assert.throws(
    () => parseCommand(["serve"]),
    /unexpected argument "serve"; the options are --port/,
  );
  assert.throws(() => parseCommand(["--port"]), { message: "--port needs a value; see --help" });
  assert.throws(
    () => parseCommand(["--port", "-1"]),
    /--port needs a value; to pass one that starts with '-', write --port=VALUE/,
  );
  for (const bad of ["abc", "70000", "-1", "80.5", ""]) {
    assert.throws(
      () => parseCommand([`--port=${bad}`]),
      { message: `--port must be a whole number from 0 to 65535, got ${JSON.stringify(bad)}` },
    );
  }
  assert.throws(
    () => parseCommand([], (name) => name === "PORT" ? "http" : undefined),
    /^ConfigError: PORT must be/,
  );
  assert.throws(() => parseCommand(["--hostname", "a b"]), /--hostname must be a host name/);
});
