/**
 * The history desk: everything a client reads from the store through the hub. A `history`
 * request's page, and what a welcome carries (the latest messages, or exactly those missed since
 * `since`). History is cheap to ask for and dear to send, so each connection draws on an
 * allowance of bytes (1 MiB at once, 256 KiB a second by default): a reply reserves the most it
 * may take before the store is read, and gives back what it did not use. Pages are encoded once
 * for everyone who asks for the same messages (lib/chat/replies.ts).
 */

import { encodeJson, encodeText } from "../protocol/encode.ts";
import { type HistoryStore, type Maybe, type Message, when } from "../store/history.ts";
import { TokenBucket } from "../base/limits.ts";
import {
  type Format,
  JSON_PROTOCOL,
  type ProtocolError,
  type Ref,
  type ServerEvent,
} from "../protocol/protocol.ts";
import {
  asEvent,
  fitting,
  type Frame,
  frameOf,
  HISTORY_FRAME_BYTES,
  pageKey,
  Pages,
  refField,
  withRefFrame,
} from "./replies.ts";
import { utf8Length } from "../base/utf8.ts";

/** What the desk needs of a reader: its format, and a place for its allowance. */
export interface Reader {
  readonly conn: { readonly format: Format };
  replies?: TokenBucket | undefined;
}

/** What a welcome found in the store. */
export interface Found {
  messages: Message[];
  /** Present when the client asked with `since`: whether `messages` is all it missed. */
  recovered?: boolean;
  /** The room's last id. */
  head: number;
}

/** What a welcome says besides history. */
export interface WelcomeFields {
  server: string;
  name: string;
  room: string;
  members: string[];
  count: number;
  topic?: string;
  role?: "moderator" | "admin";
}

export interface DeskOptions {
  /** Messages a JSON client gets with its welcome. */
  historyOnJoin: number;
  /** A page when a `history` request names no limit, by format. */
  defaultPage: { text: number; json: number };
  replyBurstBytes: number;
  replyBytesPerSecond: number;
}

export class HistoryDesk {
  readonly #pages = new Pages();

  constructor(readonly store: HistoryStore, readonly options: DeskOptions) {}

  /** Forgets every encoded page: a kept message changed (a moderator deleted it). */
  forget(): void {
    this.#pages.clear();
  }

  /**
   * A `history` request: hands `send` the page's frame (with `ref`), or `refuse` an error (over
   * the allowance: `rate_limited` with the wait; a store that cannot answer: `unavailable`).
   */
  page(
    reader: Reader,
    room: string,
    request: { limit?: number | undefined; before?: number | undefined; ref?: Ref | undefined },
    send: (frame: Frame) => void,
    refuse: (error: ProtocolError) => void,
  ): void {
    const format = reader.conn.format;
    const limit = request.limit ?? this.options.defaultPage[format];
    const ref = request.ref;
    const wait = this.reserve(reader);
    if (wait > 0) {
      const { replyBurstBytes: burst, replyBytesPerSecond: rate } = this.options;
      return refuse({
        code: "rate_limited",
        message: `too much history too fast: at most ${Math.round(burst / 1024)} KiB at once and ${
          Math.round(rate / 1024)
        } KiB a second per connection; ask again in ${Math.ceil(wait)} s`,
        ...refField(ref),
      });
    }
    // One more than asked says whether there is more; the byte budget may trim the page.
    when(
      () => this.store.latest(room, limit + 1, request.before),
      (found) => {
        const page = fitting(found.slice(-limit));
        const more = found.length > page.length;
        const key = pageKey(`history ${format} ${more}`, this.store.epoch, room, page);
        const frame = this.#pages.get(key, () => {
          const event = { type: "history" as const, room, messages: page.map(asEvent), more };
          return format === "json" ? encodeJson(event) : encodeText(event);
        });
        this.settle(reader, frame.bytes);
        send(format === "json" ? withRefFrame(frame, ref) : frame);
      },
      (error) => {
        this.settle(reader, 0);
        refuse({
          code: "unavailable",
          message: `history is not available right now (${(error as Error).message})`,
          ...refField(ref),
        });
      },
    );
  }

  /**
   * Reserves the most one reply may take from a reader's allowance, before the store is read:
   * requests in flight together cannot pass it. Returns 0, or the seconds to wait.
   */
  reserve(reader: Reader): number {
    const { replyBurstBytes, replyBytesPerSecond } = this.options;
    const replies = reader.replies ??= new TokenBucket(replyBurstBytes, replyBytesPerSecond);
    const most = this.#reservation();
    return replies.take(most) ? 0 : replies.wait(most);
  }

  /** Gives back what a reserved reply did not use. */
  settle(reader: Reader, used: number): void {
    reader.replies?.refund(this.#reservation() - used);
  }

  /** What a reply reserves: a full page, or half the allowance where that is smaller. */
  #reservation(): number {
    return Math.min(HISTORY_FRAME_BYTES, this.options.replyBurstBytes / 2);
  }

  /**
   * What a welcome needs from the store: the room's last id, and for a JSON client the latest
   * messages (none when its allowance was not `reserved`), or all it missed since `since`.
   */
  read(reader: Reader, room: string, since: number | undefined, reserved: boolean): Maybe<Found> {
    const store = this.store;
    const head = store.head(room);
    // Plain-text clients get no replay: the seed's REPL experience stays as it was.
    if (reader.conn.format !== "json") return when(() => head, (head) => ({ messages: [], head }));
    // Only as much as one frame can carry is read: more, and the latest go instead.
    const missed = since === undefined ? undefined : store.after(room, since, HISTORY_FRAME_BYTES);
    const latest = store.latest(room, reserved ? this.options.historyOnJoin : 0);
    return when(() => all3(head, missed, latest), ([head, missed, latest]) => {
      // All that was missed, if it is kept and fits one frame; otherwise the latest, and say so.
      const recovered = missed?.complete === true &&
        fitting(missed.messages).length === missed.messages.length;
      const messages = recovered ? missed!.messages : fitting(latest);
      return missed ? { messages, recovered, head } : { messages, head };
    });
  }

  /**
   * The welcome as a frame. A JSON welcome's history is encoded once for every welcome that
   * carries the same messages, and is charged to the reader's allowance.
   */
  welcome(
    reader: Reader,
    fields: WelcomeFields,
    found: Omit<Found, "head">,
    reserved: boolean,
    ref: Ref | undefined,
  ): Frame {
    const json = reader.conn.format === "json";
    const welcome: ServerEvent = {
      type: "welcome",
      protocol: json ? JSON_PROTOCOL : "text",
      ...fields,
    };
    if (!json) return frameOf(encodeText(welcome))!;
    const epoch = this.store.epoch;
    welcome.epoch = epoch;
    if (found.recovered !== undefined) welcome.recovered = found.recovered;
    const history = this.#pages.get(
      pageKey("welcome", epoch, fields.room, found.messages),
      () => JSON.stringify(found.messages.map(asEvent)),
    );
    if (reserved) this.settle(reader, history.bytes);
    else if (found.messages.length > 0) reader.replies?.refund(-history.bytes); // a recovery
    const head = encodeJson(welcome);
    const tail = ref === undefined ? "}" : `,"ref":${JSON.stringify(ref)}}`;
    const data = `${head.slice(0, -1)},"history":${history.data}${tail}`;
    return { data, bytes: utf8Length(head) - 1 + 11 + history.bytes + utf8Length(tail) };
  }
}

/** Three values, now if none is a promise. */
function all3<A, B, C>(a: Maybe<A>, b: Maybe<B>, c: Maybe<C>): Maybe<[A, B, C]> {
  if (a instanceof Promise || b instanceof Promise || c instanceof Promise) {
    return Promise.all([a, b, c]);
  }
  return [a, b, c];
}
