/**
 * What the hub sends, as frames: an event encoded once with its UTF-8 size, shared by its
 * recipients; and history, whose replies are the dearest thing a client can ask for, so their
 * pages are bounded ({@link HISTORY_FRAME_BYTES}, {@link fitting}) and encoded once for everyone
 * who asks for the same messages ({@link Pages}).
 */

import { copyMessage, type Message } from "../store/history.ts";
import { type ChatMessage, type Ref, utf8Length } from "../protocol/protocol.ts";

/** An encoded event and its size, computed once and shared by its recipients. */
export interface Frame {
  readonly data: string;
  readonly bytes: number;
}

/** A frame to send, or null for an event this format does not carry. */
export function frameOf(data: string | null): Frame | null {
  return data === null ? null : { data, bytes: utf8Length(data) };
}

/**
 * Encoded history pages by what they hold, least recently used first, up to
 * {@link PAGES_BYTES}. Stored messages never change under an epoch, so a page is known by its
 * room, epoch and first and last ids: twenty clients asking for the same page cost one encoding.
 */
export class Pages {
  readonly #frames = new Map<string, Frame>();
  #bytes = 0;

  clear(): void {
    this.#frames.clear();
    this.#bytes = 0;
  }

  get(key: string, encode: () => string | null): Frame {
    let frame = this.#frames.get(key);
    if (frame) {
      this.#frames.delete(key);
      this.#frames.set(key, frame);
      return frame;
    }
    frame = frameOf(encode()) ?? { data: "", bytes: 0 };
    // Small pages are cheap to encode again; caching them would cost an entry per room.
    if (frame.bytes < PAGE_WORTH_KEEPING || frame.bytes > PAGES_BYTES / 4) return frame;
    this.#frames.set(key, frame);
    this.#bytes += frame.bytes;
    while (this.#bytes > PAGES_BYTES) {
      const [old, dropped] = this.#frames.entries().next().value!;
      this.#frames.delete(old);
      this.#bytes -= dropped.bytes;
    }
    return frame;
  }
}

/** Bytes of encoded history kept for sharing, and the smallest page worth keeping. */
const PAGES_BYTES = 8 * 1024 * 1024;
const PAGE_WORTH_KEEPING = 16 * 1024;

/** What identifies a page of history: its kind, epoch, room, and first and last ids. */
export function pageKey(kind: string, epoch: string, room: string, page: Message[]): string {
  return `${kind}\u0000${epoch}\u0000${room}\u0000${page[0]?.id ?? 0}\u0000${page.at(-1)?.id ?? 0}`;
}

/** A shared JSON frame with a request's `ref` added, as `withRef` in the hub would. */
export function withRefFrame(frame: Frame, ref: Ref | undefined): Frame {
  if (ref === undefined || frame.bytes === 0) return frame;
  const tail = `,"ref":${JSON.stringify(ref)}}`;
  return { data: frame.data.slice(0, -1) + tail, bytes: frame.bytes - 1 + utf8Length(tail) };
}

/** Most bytes (roughly, as JSON) of history that one welcome or history reply carries. */
export const HISTORY_FRAME_BYTES = 512 * 1024;

/** Characters JSON writes escaped (and surrogates, which may be lone): counted by encoding. */
// deno-lint-ignore no-control-regex
const ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;

/** UTF-8 bytes of `text` as a JSON string, quotes included. */
function jsonBytes(text: string): number {
  return ESCAPED.test(text) ? utf8Length(JSON.stringify(text)) : utf8Length(text) + 2;
}

/**
 * The newest of `messages` (oldest first) that fit in {@link HISTORY_FRAME_BYTES} as JSON. The
 * text counts as JSON writes it: plain text at its size (a worst-case guess of twice that halved
 * what a recovery could carry), text with quotes or control characters as escaped.
 */
export function fitting(messages: Message[]): Message[] {
  let bytes = 0;
  let start = messages.length;
  while (start > 0) {
    const message = messages[start - 1]!;
    // 96 for the fields around it (type, id, ts, action, deleted, and the names of all).
    bytes += jsonBytes(message.text) + jsonBytes(message.from) + jsonBytes(message.room) + 96;
    if (bytes > HISTORY_FRAME_BYTES) break;
    start--;
  }
  return messages.slice(start);
}

/** A message as its event (one argument only: it is mapped over pages of history). */
export function asEvent(message: Message): ChatMessage {
  return copyMessage({ type: "message" as const }, message);
}

/** A message as its author's acknowledgement: its event, with the request's `ref`. */
export function asAck(message: Message, ref: Ref | undefined): ChatMessage {
  const event = asEvent(message);
  if (ref !== undefined) event.ref = ref;
  return event;
}

/** A `ref` as an optional field: present only when the request had one. */
export function refField(ref: Ref | undefined): { ref?: Ref } {
  return ref === undefined ? {} : { ref };
}
