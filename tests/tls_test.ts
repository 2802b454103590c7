/** --cert/--key: natter serves https and wss itself (a real process, a real certificate). */

import assert from "node:assert/strict";
import { MAIN, run, ServerProcess } from "./helpers.ts";

function haveOpenssl(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const SKIP = !haveOpenssl() && Deno.env.get("CI") !== "true";
if (SKIP) {
  console.warn("\n!!! SKIPPED the TLS test: `openssl` is not on PATH to make a certificate.\n");
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  const made = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  assert.ok(made.success, `openssl ${args[0]}: ${new TextDecoder().decode(made.stderr)}`);
}

/** The client side, run with `--cert` so that it trusts the self-signed certificate. */
const CLIENT = `
const port = Deno.args[0];
const page = await fetch("https://localhost:" + port + "/");
const html = await page.text();
const open = (name) => new Promise((resolve, reject) => {
  const ws = new WebSocket("wss://localhost:" + port + "/?name=" + name);
  const lines = [];
  ws.onmessage = (e) => lines.push(e.data);
  ws.onopen = () => resolve({ ws, lines });
  ws.onerror = () => reject(new Error("wss failed"));
});
const a = await open("alice");
const b = await open("bob");
await new Promise((r) => setTimeout(r, 200));
a.ws.send("over tls");
await new Promise((r) => setTimeout(r, 300));
console.log(JSON.stringify({ status: page.status, title: /<title>(.*)<\\/title>/.exec(html)?.[1], got: b.lines }));
a.ws.close(); b.ws.close();
`;

Deno.test({
  name: "--cert and --key serve the page over https and chat over wss",
  ignore: SKIP,
  async fn() {
    if (!haveOpenssl()) throw new Error("CI=true but openssl is missing: .ci/run must install it");
    const dir = await Deno.makeTempDir({ prefix: "natter-tls-" });
    try {
      // A throwaway CA and a certificate for localhost signed by it (rustls refuses a
      // self-signed CA certificate as the server's own).
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
      await openssl(dir, [
        "req",
        "-x509",
        ...ec,
        "-days",
        "1",
        "-subj",
        "/CN=natter test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
      ]);
      await openssl(dir, [
        "req",
        ...ec,
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
      ]);
      await Deno.writeTextFile(
        `${dir}/leaf.ext`,
        [
          "subjectAltName=DNS:localhost,IP:127.0.0.1",
          "basicConstraints=CA:FALSE",
          "extendedKeyUsage=serverAuth",
          "authorityKeyIdentifier=keyid",
          "subjectKeyIdentifier=hash",
        ].join("\n") + "\n",
      );
      await openssl(dir, [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
      ]);
      const server = await ServerProcess.start(
        ["--port", "0", "--cert", `${dir}/cert.pem`, "--key", `${dir}/key.pem`],
        MAIN,
        ["--allow-net", `--allow-read=${dir}`],
      );
      try {
        const port = await server.port();
        assert.match(
          server.stdout,
          new RegExp(`listening on https://localhost:${port}/.*new WebSocket\\("wss://`),
        );
        await Deno.writeTextFile(`${dir}/client.js`, CLIENT);
        const client = await run([
          "run",
          "--allow-net",
          "--cert",
          `${dir}/ca.pem`,
          `${dir}/client.js`,
          String(port),
        ]);
        assert.equal(client.code, 0, client.stderr);
        const result = JSON.parse(client.stdout);
        assert.equal(result.status, 200);
        assert.equal(result.title, "natter");
        assert.ok(result.got.includes("alice: over tls"), JSON.stringify(result.got));
      } finally {
        await server.stop();
      }
      const denied = await run([
        "run",
        "--allow-net",
        MAIN,
        "--cert",
        `${dir}/cert.pem`,
        "--key",
        `${dir}/key.pem`,
      ]);
      assert.equal(denied.code, 2);
      assert.match(denied.stderr, /--cert cannot read ".*cert\.pem": run with --allow-read=/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
