/**
 * The seed's user guide, word for word, typed into real REPLs: `deno repl -N` and
 * Node's REPL, each connecting with a bare `new WebSocket(...)` to a real natter process.
 */

import assert from "node:assert/strict";
import { ServerProcess, sleep, until } from "./helpers.ts";

/** A REPL process driven through its stdin, as a person types. */
class Repl {
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  output = "";

  constructor(command: string, args: string[]) {
    this.#child = new Deno.Command(command, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", NODE_DISABLE_COLORS: "1" },
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    const read = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this.output += chunk;
    };
    this.#reading = Promise.all([read(this.#child.stdout), read(this.#child.stderr)]).then(
      () => {},
    );
  }

  /** Types one line and presses Enter. */
  async type(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  /** Waits until the output matches; returns the match. */
  async sees(pattern: RegExp, ms = 10000): Promise<RegExpExecArray> {
    let found: RegExpExecArray | null = null;
    await until(
      () => (found = pattern.exec(this.output)) !== null,
      `${pattern} in ${JSON.stringify(this.output)}`,
      ms,
    );
    return found!;
  }

  /** Ends the session as a person would: end of input (Ctrl-D). */
  async quit(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    const timer = setTimeout(() => this.#child.kill(), 5000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#reading;
  }
}

/** A whole printed line, after the prompt Node's REPL may print before it. */
function printed(line: string): RegExp {
  return new RegExp(`(?:^|> )${line}$`, "m");
}

/** The two lines of the guide that open a socket and print every message. */
async function connect(repl: Repl, port: number): Promise<void> {
  await repl.type(`let ws = new WebSocket("ws://localhost:${port}")`);
  await repl.type("ws.onmessage = message => console.log(`${message.data}`)");
  await repl.sees(/\[Function/);
  // Let the socket open before the person's next line, as a person typing would.
  await sleep(300);
}

function haveNode(): boolean {
  try {
    const { code } = new Deno.Command("node", { args: ["--version"] }).outputSync();
    return code === 0;
  } catch {
    return false;
  }
}

Deno.test("deno repl: the seed's guide works word for word", async () => {
  const server = await ServerProcess.start(["--port", "0"]);
  const port = await server.port();
  const first = new Repl(Deno.execPath(), ["repl", "-N"]);
  const second = new Repl(Deno.execPath(), ["repl", "-N"]);
  try {
    await connect(first, port);
    await connect(second, port);
    const [, secondName] = await first.sees(printed("\\* (guest-\\d+) joined"));
    await second.type('ws.send("Your message here..")');
    await first.sees(printed(`${secondName}: Your message here\\.\\.`));
    await sleep(300);
    assert.doesNotMatch(second.output, /: Your message here\.\./, "the sender gets nothing back");
    await second.type("ws.close()");
    await first.sees(printed(`\\* ${secondName} left`));
  } finally {
    await first.quit();
    await second.quit();
    await server.stop();
  }
});

Deno.test("deno repl: the README's one-line form shows the welcome; /quit says bye", async () => {
  const server = await ServerProcess.start(["--port", "0"]);
  const port = await server.port();
  const repl = new Repl(Deno.execPath(), ["repl", "-N"]);
  try {
    await repl.type(
      `let ws = new WebSocket("ws://localhost:${port}"); ` +
        "ws.onmessage = message => console.log(`${message.data}`)",
    );
    await repl.sees(printed("\\* you are guest-\\d+ in #lobby;.*"));
    await repl.type('ws.send("/quit")');
    await repl.sees(printed("\\* bye"));
  } finally {
    await repl.quit();
    await server.stop();
  }
});

Deno.test({
  name: "node repl: the same guide works from Node, and Node and Deno users see each other",
  ignore: !haveNode() && Deno.env.get("CI") !== "true",
  async fn() {
    if (!haveNode()) {
      throw new Error("CI=true but `node` is not on PATH: .ci/run must install Node.js");
    }
    const server = await ServerProcess.start(["--port", "0"]);
    const port = await server.port();
    const deno = new Repl(Deno.execPath(), ["repl", "-N"]);
    const node = new Repl("node", ["--experimental-websocket", "--interactive"]);
    try {
      await connect(deno, port);
      await connect(node, port);
      const [, nodeName] = await deno.sees(printed("\\* (guest-\\d+) joined"));
      await node.type('ws.send("Your message here..")');
      await deno.sees(printed(`${nodeName}: Your message here\\.\\.`));
      await deno.type('ws.send("hello from deno")');
      const [, denoName] = await node.sees(printed("(guest-\\d+): hello from deno"));
      await node.type("ws.close()");
      await deno.sees(printed(`\\* ${nodeName} left`));
      assert.doesNotMatch(
        node.output,
        new RegExp(`${nodeName}: Your message`),
        "no echo in Node either",
      );
      assert.notEqual(denoName, nodeName);
    } finally {
      await deno.quit();
      await node.quit();
      await server.stop();
    }
  },
});

if (!haveNode() && Deno.env.get("CI") !== "true") {
  console.warn(
    "\n!!! SKIPPED the Node REPL test: `node` is not on PATH. Install Node.js 20+ to run it.\n",
  );
}
