/**
 * The server API for backends and bots (`--api-key KEY`, sent as `Authorization: Bearer KEY`):
 *
 *     POST   /api/publish                      {"room","text","name"} → {"id","ts"}
 *     GET    /api/rooms                        → {"rooms":[{"room","members"}]}
 *     GET    /api/rooms/ROOM/members           → {"room","members":[names]}
 *     GET    /api/rooms/ROOM/history?since=&limit=&before=  → {"room","messages","complete"?}
 *     POST   /api/disconnect                   {"sub"} or {"name"} → {"requested":true}
 *     DELETE /api/rooms/ROOM/messages/ID       → {"deleted":ID}
 *
 * Answers are JSON; errors are `{"error":{"code","message"}}` with a status. A publish follows
 * the send contract a client's `say` does (stored and delivered in order, or an error, or
 * "unknown": 202, with a key to resend), the same size cap and the same rules for names and
 * rooms, under one rate limit for the API as a connection's. Without `--api-key` there is no
 * `/api/`: the paths answer 404 as before.
 */

import type { Hub } from "../chat/hub.ts";
import type { Options } from "../ops/config.ts";
import { MAX_HISTORY_PAGE, utf8Length } from "../protocol/protocol.ts";
import { checkName, checkRoom, NAME_RULE, quote, ROOM_RULE, sanitize } from "../protocol/text.ts";
import { TokenBucket } from "../base/limits.ts";
import type { HistoryStore } from "../store/history.ts";
import { json } from "./routes.ts";
import { sameSecret } from "./token.ts";
import { Metrics } from "../base/metrics.ts";
import type { Logger } from "../base/log.ts";

/** How often refused API keys may be logged. */
const LOG_REFUSED_EVERY_MS = 30_000;

/**
 * Largest request body the API reads: a message's cap six times over (JSON may write each byte
 * of text as a six-character escape, `\u0001`), and room for the other fields.
 */
export function apiBodyLimit(maxMessageBytes: number): number {
  return maxMessageBytes * 6 + 4096;
}

/** A JSON error answer. */
function failure(request: Request, status: number, code: string, message: string, headers = {}) {
  const response = json(request, { error: { code, message } }, status);
  for (const [name, value] of Object.entries(headers)) {
    response.headers.set(name, value as string);
  }
  return response;
}

/** Reads a JSON object body; a failure answer when it is not one. */
async function body(
  request: Request,
  limit: number,
): Promise<Record<string, unknown> | Response> {
  let text: string;
  try {
    text = await request.text();
  } catch {
    return failure(request, 400, "bad_request", "the request body could not be read");
  }
  if (utf8Length(text) > limit) {
    return failure(request, 413, "too_long", `the body is over ${limit} bytes`);
  }
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // answered below
  }
  return failure(request, 400, "bad_json", "the body must be a JSON object");
}

export class Api {
  readonly #key: string;
  readonly #hub: Hub;
  readonly #store: HistoryStore;
  readonly #maxMessageBytes: number;
  readonly #rate: TokenBucket;
  readonly #metrics: Metrics | undefined;
  readonly #log: Logger | undefined;
  /** Requests refused for their key since the last log line, from which addresses, and when. */
  #refused = 0;
  #from = new Set<string>();
  #loggedAt = -Infinity;
  /** Logs what came since the last line once its quiet time is over, if nothing else does. */
  #flushLater: ReturnType<typeof setTimeout> | undefined;
  readonly #logEveryMs: number;

  constructor(
    options: Options,
    hub: Hub,
    store: HistoryStore,
    metrics?: Metrics,
    log?: Logger,
    logEveryMs = LOG_REFUSED_EVERY_MS,
  ) {
    this.#logEveryMs = logEveryMs;
    this.#key = options.apiKey!;
    this.#hub = hub;
    this.#store = store;
    this.#maxMessageBytes = options.maxMessageBytes;
    this.#rate = new TokenBucket(options.rateBurst, options.ratePerSecond);
    this.#metrics = metrics;
    this.#log = log;
  }

  /**
   * A request came with a missing or wrong key: counted, and logged at most twice a minute with
   * how many came since the last line and from where (the first few addresses).
   */
  #wrongKey(address: string | undefined): void {
    if (this.#metrics) Metrics.bump(this.#metrics.refused, "api_key");
    this.#refused++;
    if (address !== undefined && this.#from.size < 5) this.#from.add(address);
    const wait = this.#loggedAt + this.#logEveryMs - Date.now();
    if (wait <= 0) return this.#logRefused();
    // Within the quiet time: the count is logged when it ends, even if no further request comes.
    if (this.#flushLater === undefined) {
      const flush = () => {
        this.#flushLater = undefined;
        this.#logRefused();
      };
      const timer: ReturnType<typeof setTimeout> = setTimeout(flush, wait);
      Deno.unrefTimer(this.#flushLater = timer);
    }
  }

  /** Logs the requests refused since the last line, if any. */
  #logRefused(): void {
    if (this.#refused === 0) return;
    const now = Date.now();
    clearTimeout(this.#flushLater);
    this.#flushLater = undefined;
    this.#log?.warn("API requests refused for a missing or wrong key", {
      count: this.#refused,
      from: [...this.#from].join(" "),
      sinceSeconds: Number.isFinite(this.#loggedAt) ? Math.round((now - this.#loggedAt) / 1000) : 0,
    });
    this.#loggedAt = now;
    this.#refused = 0;
    this.#from.clear();
  }

  /** Logs what is left to log (the server is stopping). */
  stop(): void {
    this.#logRefused();
  }

  /** The largest body a request may carry. */
  get bodyLimit(): number {
    return apiBodyLimit(this.#maxMessageBytes);
  }

  /** Answers a request under `/api/`. */
  async handle(request: Request, url: URL, address?: string): Promise<Response> {
    const header = request.headers.get("authorization") ?? "";
    const given = /^bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    if (given === undefined || !sameSecret(given, this.#key)) {
      this.#wrongKey(address);
      return failure(
        request,
        401,
        "unauthorized",
        "send the API key as Authorization: Bearer KEY",
        {
          "www-authenticate": 'Bearer realm="natter-api"',
        },
      );
    }
    const method = request.method;
    let parts: string[];
    try {
      parts = url.pathname.split("/").slice(2).map(decodeURIComponent);
    } catch {
      return failure(request, 400, "bad_path", `${url.pathname} is not a well-formed path`);
    }
    const shape = parts[0] === "rooms" ? roomsShape(parts) : parts.join("/");
    const route = `${method} ${shape}`;
    switch (route) {
      case "POST publish":
        return await this.#publishing(request);
      case "GET rooms":
        return json(request, { rooms: this.#hub.roomList() });
      case "GET rooms/:room/members":
      case "GET rooms/:room/history":
      case "DELETE rooms/:room/messages/:id": {
        const room = checkRoom(parts[1]!);
        if (room === null) {
          return failure(
            request,
            400,
            "bad_room",
            `${quote(parts[1]!)} is not a room: ${ROOM_RULE}`,
          );
        }
        if (route.endsWith("members")) {
          return json(request, { room, members: this.#hub.membersOf(room) });
        }
        if (route.endsWith("history")) return await this.#history(request, url, room);
        const id = /^\d{1,15}$/.test(parts[3]!) ? Number(parts[3]) : NaN;
        if (!(id >= 1)) {
          return failure(request, 400, "bad_id", `${quote(parts[3]!)} is not a message id`);
        }
        return await this.#deleting(request, room, id);
      }
      case "POST disconnect":
        return await this.#disconnecting(request);
    }
    const allowed = ALLOWED[shape];
    return allowed
      ? failure(request, 405, "method_not_allowed", `${method} is not allowed on ${url.pathname}`, {
        allow: allowed,
      })
      : failure(request, 404, "not_found", `no API route ${url.pathname}`);
  }

  async #publishing(request: Request): Promise<Response> {
    const value = await body(request, this.bodyLimit);
    if (value instanceof Response) return value;
    const room = typeof value.room === "string" ? checkRoom(value.room) : null;
    if (room === null) return failure(request, 400, "bad_room", `'room' must be ${ROOM_RULE}`);
    const name = typeof value.name === "string" ? checkName(value.name) : null;
    if (name === null) return failure(request, 400, "bad_name", `'name' must be ${NAME_RULE}`);
    if (typeof value.text !== "string" || value.text.trim() === "") {
      return failure(request, 400, "empty", "'text' must be a non-empty string");
    }
    const text = sanitize(value.text);
    if (utf8Length(text) > this.#maxMessageBytes) {
      return failure(request, 413, "too_long", `'text' is over ${this.#maxMessageBytes} bytes`);
    }
    if (!this.#rate.take()) {
      return failure(request, 429, "rate_limited", "the API is over its rate limit", {
        "retry-after": "1",
      });
    }
    const published = await this.#hub.publish(room, name, text);
    if (published.ok) return json(request, { id: published.id, ts: published.ts, room });
    if (published.code === "unknown") {
      return failure(request, 202, "unknown", published.message);
    }
    return failure(request, 503, "unavailable", published.message, { "retry-after": "2" });
  }

  async #history(request: Request, url: URL, room: string): Promise<Response> {
    const number = (key: string) => {
      const raw = url.searchParams.get(key);
      return raw === null ? undefined : /^\d{1,15}$/.test(raw) ? Number(raw) : NaN;
    };
    const since = number("since");
    const before = number("before");
    const limit = number("limit") ?? 50;
    if (since !== undefined && before !== undefined) {
      return failure(request, 400, "bad_query", "give since (what came after) or before, not both");
    }
    if (
      [since, before, limit].some((n) => Number.isNaN(n)) || limit < 1 || limit > MAX_HISTORY_PAGE
    ) {
      return failure(
        request,
        400,
        "bad_query",
        `since and before are message ids; limit is 1 to ${MAX_HISTORY_PAGE}`,
      );
    }
    try {
      if (since !== undefined) {
        const { messages, complete } = await this.#store.after(room, since);
        return json(request, {
          room,
          messages: messages.slice(0, limit),
          complete,
          more: messages.length > limit,
        });
      }
      return json(request, { room, messages: await this.#store.latest(room, limit, before) });
    } catch (error) {
      return failure(
        request,
        503,
        "unavailable",
        `history is not available: ${(error as Error).message}`,
      );
    }
  }

  async #deleting(request: Request, room: string, id: number): Promise<Response> {
    try {
      if (await this.#hub.deleteMessage(room, id, "api")) {
        return json(request, { deleted: id, room });
      }
      return failure(
        request,
        404,
        "not_found",
        `no message ${id} is kept in #${room} (never sent, past the retention, or deleted already)`,
      );
    } catch (error) {
      return failure(request, 503, "unavailable", `not deleted: ${(error as Error).message}`);
    }
  }

  async #disconnecting(request: Request): Promise<Response> {
    const value = await body(request, this.bodyLimit);
    if (value instanceof Response) return value;
    // A field given with the wrong type is refused, not taken as absent: `{"sub":42,"name":"x"}`
    // must not disconnect x. `null` is absent.
    for (const field of ["sub", "name"]) {
      const given = value[field];
      if (given != null && (typeof given !== "string" || given === "")) {
        return failure(request, 400, "bad_request", `'${field}' must be a non-empty string`);
      }
    }
    const sub = (value.sub ?? undefined) as string | undefined;
    const name = (value.name ?? undefined) as string | undefined;
    if ((sub === undefined) === (name === undefined)) {
      return failure(request, 400, "bad_request", "give one of 'sub' (a user id) or 'name'");
    }
    this.#hub.disconnectEverywhere(sub === undefined ? { name: name! } : { sub }, "api");
    return json(request, { requested: true, ...(sub === undefined ? { name } : { sub }) });
  }
}

/** The methods each route answers, for a 405's `Allow`. */
const ALLOWED: Record<string, string> = {
  "publish": "POST",
  "rooms": "GET",
  "rooms/:room/members": "GET",
  "rooms/:room/history": "GET",
  "rooms/:room/messages/:id": "DELETE",
  "disconnect": "POST",
};

/** `rooms`, `rooms/:room/members`… : a path's shape, its room and id left out. */
function roomsShape(parts: string[]): string {
  return parts.map((part, i) =>
    i === 1 ? ":room" : i === 3 && parts[2] === "messages" ? ":id" : part
  )
    .join("/");
}
