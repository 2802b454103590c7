/**
 * Defaults that more than one module needs, in one place: lib/config.ts builds the server's
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
