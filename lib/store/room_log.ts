/**
 * One room's messages for the memory store (lib/store/memory.ts, its only user), off the JavaScript
 * heap: UTF-8 in one byte buffer and typed arrays beside it, compacted as the room fills and
 * empties.
 */

import type { Draft, Message } from "./history.ts";
import { NATIVE_FROM, utf8Length } from "../base/utf8.ts";

/** Bytes of one message's slot in a room's arrays: its time (8) and three numbers (12). */
const SLOT_BYTES = 20;
/**
 * What a room holding messages costs beside its arrays' contents: the log, its arrays as objects,
 * its name and its place in the maps, as the process holds them. Measured with rooms coming and
 * going (bench/rooms.ts, a one-message room each): ~900 bytes live on the heap, but about three
 * times that in resident memory once the heap has been churned by rooms that come and go. The
 * budget counts the latter, so that it bounds what the process holds, not only what is live.
 */
const ROOM_BYTES = 3072;
/** Marks an action in a slot's name length (names are far shorter than 2^31 bytes). */
const ACTION = 0x8000_0000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A room log's smallest arrays; they are sized to twice what they hold. */
const MIN_SLOTS = 4;
const MIN_BYTES = 64;
const NO_TIMES = new Float64Array(0);
const NO_NUMBERS = new Uint32Array(0);
const NO_BYTES = new Uint8Array(0);

/** The smallest power of two, at least `minimum`, that is at least `value`. */
function sized(value: number, minimum: number): number {
  let size = minimum;
  while (size < value) size *= 2;
  return size;
}

/**
 * Writes `text` as UTF-8 at `at` (the caller made room for it); returns the bytes
 * written. Short ASCII is copied here, a unit at a time: cheaper than a call into the runtime,
 * which takes long lines, and the rest of a short one from its first non-ASCII character.
 */
function writeUtf8(text: string, bytes: Uint8Array, at: number): number {
  const length = text.length;
  if (length >= NATIVE_FROM) return encoder.encodeInto(text, bytes.subarray(at)).written;
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0x80) return i + encoder.encodeInto(text.slice(i), bytes.subarray(at + i)).written;
    bytes[at + i] = unit;
  }
  return length;
}

/**
 * One room's messages, off the JavaScript heap: names and texts as UTF-8 in one byte buffer,
 * times and places in typed arrays, oldest first. Kept as objects, a busy room's history was
 * a stream of objects that lived long enough to be promoted to V8's old generation and died
 * there: at 13,000 messages a second that grew the heap by 20–30 MiB between major collections
 * (bench/slow.ts). Here a message is an object only while it is being delivered, or read back.
 *
 * Entries live at slots [head, tail) and their bytes at [start of head, end) of the buffer.
 * Dropping the oldest moves `head`. When either array runs out of room, or holds less than an
 * eighth of its size, the live part moves to the front of arrays sized to twice what it needs:
 * a full room copies its live part once per as many appends, and a room whose messages got
 * shorter gives the memory back. A room with no messages holds no arrays.
 */
export class RoomLog {
  /** Its neighbours in the store's recency list (rooms holding messages, least recent first). */
  older: RoomLog | undefined = undefined;
  newer: RoomLog | undefined = undefined;
  /** Its room's name, for the budget walk that starts from the list. */
  room = "";
  lastId = 0;
  head = 0;
  tail = 0;
  ts = NO_TIMES;
  /** Per slot: byte offset, name bytes (with {@link ACTION}), text bytes. */
  meta = NO_NUMBERS;
  bytes = NO_BYTES;
  end = 0;

  get count(): number {
    return this.tail - this.head;
  }

  /** Bytes its arrays take, and the log itself while it holds any. */
  get capacity(): number {
    if (this.ts.length === 0) return 0;
    return this.bytes.length + this.ts.length * SLOT_BYTES + ROOM_BYTES;
  }

  /** Id of the entry at slot `i`. */
  idAt(i: number): number {
    return this.lastId - (this.tail - 1 - i);
  }

  push(draft: Draft): void {
    // Room for the worst case, 3 bytes per UTF-16 unit, is known without counting; only when
    // that is not there are the bytes counted, and the arrays sized for what the message takes
    // (sized for the worst case, a room keeping one message grew and shrank them on every one).
    const most = 3 * (draft.from.length + draft.text.length);
    if (this.tail === this.ts.length || this.end + most > this.bytes.length) {
      const need = utf8Length(draft.from) + utf8Length(draft.text);
      if (this.tail === this.ts.length || this.end + need > this.bytes.length) this.#compact(need);
    }
    const i = this.tail++;
    const at = this.end;
    const from = writeUtf8(draft.from, this.bytes, at);
    const text = writeUtf8(draft.text, this.bytes, at + from);
    this.end = at + from + text;
    this.ts[i] = draft.ts;
    this.meta[3 * i] = at;
    this.meta[3 * i + 1] = draft.action ? (from | ACTION) >>> 0 : from;
    this.meta[3 * i + 2] = text;
    this.lastId++;
  }

  /** Drops the `n` oldest entries. */
  drop(n: number): void {
    this.head = Math.min(this.tail, this.head + n);
    if (this.head === this.tail) return this.#release();
    // Less than an eighth used (of arrays above their smallest size): give memory back.
    const live = this.end - this.meta[3 * this.head]!;
    const bytes = this.bytes.length;
    const slots = this.ts.length;
    if ((live * 8 < bytes && bytes > MIN_BYTES) || (this.count * 8 < slots && slots > MIN_SLOTS)) {
      this.#compact(0);
    }
  }

  /** The entry at slot `i` as a message of `room`. */
  message(room: string, i: number): Message {
    const at = this.meta[3 * i]!;
    const fromField = this.meta[3 * i + 1]!;
    const fromEnd = at + (fromField & ~ACTION);
    const message: Message = {
      room,
      id: this.idAt(i),
      ts: this.ts[i]!,
      from: decoder.decode(this.bytes.subarray(at, fromEnd)),
      text: decoder.decode(this.bytes.subarray(fromEnd, fromEnd + this.meta[3 * i + 2]!)),
    };
    if (fromField & ACTION) message.action = true;
    return message;
  }

  /** The UTF-8 length of the text at slot `i`, without decoding it. */
  textBytes(i: number): number {
    return this.meta[3 * i + 2]!;
  }

  /** Entries at slots [from, to) as messages. */
  messages(room: string, from: number, to: number): Message[] {
    const list: Message[] = [];
    for (let i = from; i < to; i++) list.push(this.message(room, i));
    return list;
  }

  #release(): void {
    this.head = this.tail = this.end = 0;
    this.ts = NO_TIMES;
    this.meta = NO_NUMBERS;
    this.bytes = NO_BYTES;
  }

  /** Moves the live entries to the front of arrays twice the size they need (with `needBytes` more). */
  #compact(needBytes: number): void {
    const count = this.count;
    const first = count > 0 ? this.meta[3 * this.head]! : 0;
    const live = this.end - first;
    const slots = sized(2 * (count + 1), MIN_SLOTS);
    const size = sized(2 * (live + needBytes), MIN_BYTES);
    const ts = slots === this.ts.length ? this.ts : new Float64Array(slots);
    ts.set(this.ts.subarray(this.head, this.tail));
    const meta = slots === this.ts.length ? this.meta : new Uint32Array(3 * slots);
    meta.set(this.meta.subarray(3 * this.head, 3 * this.tail));
    for (let i = 0; i < count; i++) meta[3 * i] = meta[3 * i]! - first;
    if (size === this.bytes.length) this.bytes.copyWithin(0, first, this.end);
    else {
      const bytes = new Uint8Array(size);
      bytes.set(this.bytes.subarray(first, this.end));
      this.bytes = bytes;
    }
    this.ts = ts;
    this.meta = meta;
    this.head = 0;
    this.tail = count;
    this.end = live;
  }
}
