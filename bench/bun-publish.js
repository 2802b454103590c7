// Bun's native pub/sub, the yardstick beside the Deno reference: every socket subscribes
// to one topic and each message is published to it (Bun skips the sender). Run by Bun, not Deno:
//
//     bun bench/bun-publish.js --port 8082
//
// bench/fanout.ts runs it when a `bun` binary is found (BENCH_BUN=/path/to/bun, or `bun` on
// PATH; `npm install bun` ships one).

const at = process.argv.indexOf("--port");
const port = at === -1 ? 8082 : Number(process.argv[at + 1]);

// deno-lint-ignore no-undef
const server = Bun.serve({
  port,
  hostname: "127.0.0.1",
  fetch(request, server) {
    if (server.upgrade(request)) return undefined;
    return new Response("bun publish reference\n");
  },
  websocket: {
    open(ws) {
      ws.subscribe("room");
    },
    message(ws, message) {
      ws.publish("room", message);
    },
  },
});
console.log(`bun-publish listening on http://127.0.0.1:${server.port}/`);
