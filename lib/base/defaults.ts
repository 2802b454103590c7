/**
 * Defaults that more than one module needs, in one place: lib/ops/config.ts builds the server's
 * options from them, and the modules that also run without a config (the hub and the stores in
 * tests, `deno serve`) fall back to the same values.
 */

/** The room of a connection that asks for none. */
export const DEFAULT_ROOM = "lobby";
/** Messages a JSON client gets with its welcome. */
export const HISTORY_ON_JOIN = 50;
/** Messages a plain-text `/history` shows when it names no number. */
export const TEXT_HISTORY_PAGE = 20;
/** Messages kept per room. */
export const HISTORY_LIMIT = 5000;
/** How long a shutdown waits for clients to take their close before it ends them. */
export const SHUTDOWN_GRACE_MS = 3000;
/** How long a message waits for an earlier one still in flight before the store fills the gap. */
export const GAP_MS = 200;
/** A member's `typing` is passed on at most this often, in milliseconds. */
export const TYPING_INTERVAL_MS = 2000;
/**
 * A connection's history allowance: a page of history is a cheap request for the client and
 * hundreds of KiB for the server to send, so past 1 MiB at once a connection gets 256 KiB a second
 * (a few pages of ordinary chat; a welcome then carries less, and a `history` request is refused
 * with `rate_limited` until the debt is paid).
 */
export const REPLY_BURST_BYTES = 1024 * 1024;
export const REPLY_BYTES_PER_SECOND = 256 * 1024;
