import assert from "node:assert/strict";
import { type CliEnvironment, parseCommand, usage } from "../lib/ops/cli.ts";
import { DEFAULTS } from "../lib/ops/config.ts";

const readFile = (path: string): string => {
  if (path === "/secret/token") return "s3cret-token\n";
  if (path.endsWith(".pem")) return `PEM of ${path}`;
  throw new Deno.errors.NotFound(`no such file: ${path}`);
};
const NO_ENV: CliEnvironment = { env: () => undefined, readFile };

Deno.test("parseCommand() reads --port, -p, --hostname and -H", () => {
  const run = (args: string[]) => {
    const command = parseCommand(args, NO_ENV);
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
  assert.deepEqual(parseCommand(["--help"], NO_ENV), { kind: "help" });
  assert.deepEqual(parseCommand(["-h"], NO_ENV), { kind: "help" });
  assert.deepEqual(parseCommand(["--version"], NO_ENV), { kind: "version" });
  assert.deepEqual(parseCommand(["-V"], NO_ENV), { kind: "version" });
});

Deno.test("parseCommand() uses PORT and HOST, and flags win over them", () => {
  const env = (name: string) =>
    ({ PORT: "7000", HOST: "127.0.0.1" } as Record<string, string>)[name];
  const fromEnv = parseCommand([], { env, readFile });
  assert.equal(fromEnv.kind === "serve" && fromEnv.options.port, 7000);
  assert.equal(fromEnv.kind === "serve" && fromEnv.options.hostname, "127.0.0.1");
  const flagWins = parseCommand(["--port", "7001"], { env, readFile });
  assert.equal(flagWins.kind === "serve" && flagWins.options.port, 7001);
});

Deno.test("parseCommand() rejects unknown flags, stray arguments and bad values, listing what is allowed", () => {
  assert.throws(() => parseCommand(["--prot", "1"], NO_ENV), {
    name: "ConfigError",
    message:
      /^unknown option --prot; did you mean --port\? the options are --port, --hostname, .*--version$/,
  });
  assert.throws(
    () => parseCommand(["serve"], NO_ENV),
    /unexpected argument "serve"; the options are --port/,
  );
  assert.throws(() => parseCommand(["--help=1"], NO_ENV), {
    message: "--help takes no value",
  });
  assert.throws(() => parseCommand(["--port"], NO_ENV), {
    message: "--port needs a value",
  });
  assert.throws(
    () => parseCommand(["--port", "-1"], NO_ENV),
    /--port needs a value; to pass one that starts with '-', write --port=VALUE/,
  );
  for (const bad of ["abc", "70000", "-1", "80.5", ""]) {
    assert.throws(
      () => parseCommand([`--port=${bad}`], NO_ENV),
      { message: `--port must be a whole number from 0 to 65535, got ${JSON.stringify(bad)}` },
    );
  }
  assert.throws(
    () => parseCommand([], { env: (name) => name === "PORT" ? "http" : undefined, readFile }),
    /^ConfigError: PORT must be/,
  );
  assert.throws(
    () => parseCommand(["--hostname", "a b"], NO_ENV),
    /--hostname must be a host name/,
  );
});

function serveOptions(args: string[], env: CliEnvironment = NO_ENV) {
  const command = parseCommand(args, env);
  if (command.kind !== "serve") throw new Error(`expected serve, got ${command.kind}`);
  return command.options;
}

Deno.test("parseCommand() reads the limits, with sizes in bytes, KiB or MiB", () => {
  const options = serveOptions([
    "--max-message=4KiB",
    "--rate",
    "2.5",
    "--rate-burst",
    "10",
    "--max-connections",
    "500",
    "--max-per-address",
    "3",
    "--max-buffered",
    "2m",
    "--idle-timeout",
    "0",
  ]);
  assert.equal(options.maxMessageBytes, 4096);
  assert.equal(options.ratePerSecond, 2.5);
  assert.equal(options.rateBurst, 10);
  assert.equal(options.maxConnections, 500);
  assert.equal(options.maxPerAddress, 3);
  assert.equal(options.maxBufferedBytes, 2 * 1024 * 1024);
  assert.equal(options.idleTimeout, 0);
  assert.equal(serveOptions([]).maxPerAddress, DEFAULTS.maxPerAddress);
});

Deno.test("parseCommand() names the flag in errors about limits", () => {
  assert.throws(() => parseCommand(["--max-message", "lots"], NO_ENV), {
    message: '--max-message must be a size such as 16384, 16KiB, 1MiB or 1GiB, got "lots"',
  });
  assert.throws(() => parseCommand(["--max-connections", "0"], NO_ENV), {
    message: "--max-connections must be a whole number 1 or more, got 0",
  });
  assert.throws(
    () => parseCommand(["--rate", "fast"], NO_ENV),
    /--rate must be a number of messages per second/,
  );
  assert.throws(() => parseCommand(["--log", "xml"], NO_ENV), {
    message: '--log must be text or json, got "xml"',
  });
});

Deno.test("parseCommand() reads origins, tokens, TLS files and logging", () => {
  const options = serveOptions([
    "--allow-origin",
    "https://a.example, https://b.example:8443",
    "--token-file",
    "/secret/token",
    "--cert",
    "/tls/cert.pem",
    "--key",
    "/tls/key.pem",
    "--log",
    "json",
    "-q",
  ]);
  assert.deepEqual(options.allowOrigins, ["https://a.example", "https://b.example:8443"]);
  assert.equal(options.token, "s3cret-token");
  assert.equal(options.cert, "PEM of /tls/cert.pem");
  assert.equal(options.key, "PEM of /tls/key.pem");
  assert.equal(options.log, "json");
  assert.equal(options.quiet, true);
  assert.deepEqual(serveOptions(["--allow-origin", "*"]).allowOrigins, ["*"]);
  const fromEnv = serveOptions([], {
    env: (name) => name === "NATTER_TOKEN" ? "env-token-123" : undefined,
    readFile,
  });
  assert.equal(fromEnv.token, "env-token-123");
});

Deno.test("parseCommand() explains unreadable files and bad origins", () => {
  assert.throws(
    () => parseCommand(["--token-file", "/nope"], NO_ENV),
    /--token-file cannot read "\/nope": no such file/,
  );
  const denied = {
    env: () => undefined,
    readFile: (): string => {
      throw new Deno.errors.NotCapable("Requires read access");
    },
  };
  assert.throws(() => parseCommand(["--cert", "/c.pem", "--key", "/k.pem"], denied), {
    message: '--cert cannot read "/c.pem": run with --allow-read=/c.pem\n' +
      'natter: --key cannot read "/k.pem": run with --allow-read=/k.pem',
  });
  assert.throws(
    () => parseCommand(["--allow-origin", "example.com"], NO_ENV),
    /--allow-origin entries must be/,
  );
  assert.throws(() => parseCommand(["--cert", "/c.pem"], NO_ENV), /--cert and --key go together/);
});

Deno.test("usage() lists every flag with its default", () => {
  const text = usage();
  for (
    const flag of [
      "--port PORT",
      "--max-message BYTES",
      "--allow-origin ORIGINS",
      "--token TOKEN",
      "--log FORMAT",
    ]
  ) {
    assert.ok(text.includes(flag), flag);
  }
  assert.match(text, /\[env PORT\]/);
});

Deno.test("parseCommand() refuses two flags for one setting; a flag beats its variable", () => {
  assert.throws(() => parseCommand(["--token", "t", "--token-file", "/secret/token"], NO_ENV), {
    name: "ConfigError",
    message: "--token and --token-file both set the same thing; give one",
  });
  const env = (name: string) => name === "NATTER_TOKEN" ? "from-env" : undefined;
  const command = parseCommand(["--token-file", "/secret/token"], { env, readFile });
  assert.equal(command.kind === "serve" && command.options.token, "s3cret-token");
});

Deno.test("parseCommand() says where the settings came from and which variables it could not read", () => {
  const env = (name: string) => name === "REDIS_URL" ? "redis://r:6379" : undefined;
  const readable = parseCommand(["--port", "9000"], { env, readFile });
  assert.equal(readable.kind === "serve" && readable.settings, "settings from --port, REDIS_URL");
  const none = parseCommand([], { env, readFile, canReadEnv: () => false });
  assert.equal(
    none.kind === "serve" && none.settings,
    "default settings; environment not read: give deno --allow-env (before the script) to use " +
      "PORT, HOST, NATTER_PUBLIC_ORIGIN, NATTER_TOKEN, NATTER_JWT_SECRET, NATTER_API_KEY, REDIS_URL",
  );
  assert.equal(none.kind === "serve" && none.options.redis, undefined);
});

Deno.test("parseCommand() suggests the flag a typo meant", () => {
  assert.throws(() => parseCommand(["--max-conections", "5"], NO_ENV), {
    message: /^unknown option --max-conections; did you mean --max-connections\?/,
  });
  assert.throws(() => parseCommand(["--zzz"], NO_ENV), {
    message: /^unknown option --zzz; the options are/,
  });
});

Deno.test("parseCommand() reports every bad flag of a run at once", () => {
  assert.throws(
    () => parseCommand(["--cert", "/no/cert.crt", "--key", "/no/key.k", "--rate", "x"], NO_ENV),
    (error: Error) => {
      assert.match(error.message, /--rate must be a number/);
      assert.match(error.message, /--cert cannot read "\/no\/cert\.crt"/);
      assert.match(error.message, /--key cannot read "\/no\/key\.k"/);
      return true;
    },
  );
});
