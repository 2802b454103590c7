/**
 * Many instances, one chat: a Redis store (per-room ids and history in Redis Streams) and a
 * Redis broker (pub/sub), over one link of two connections (commands, and the subscription).
 * Each has its own module; this one gathers them for the code that opens them (lib/app.ts):
 * the link (lib/redis_link.ts: connections, health checks, reconnection, `redact`), the store
 * (lib/redis_store.ts: keys and Lua scripts) and the broker (lib/redis_broker.ts: the channel).
 */

export { redact, RedisError, RedisLink } from "./redis_link.ts";
export { RedisStore } from "./redis_store.ts";
export { EVENTS_CHANNEL, RedisBroker } from "./redis_broker.ts";
