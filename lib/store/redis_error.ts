/**
 * The error natter gives when Redis cannot be used at start, apart from the Redis client: the
 * entry point names it without loading the client, which only `--redis` needs.
 */

/** Redis could not be used at start; the message says why. */
export class RedisError extends Error {
  override name = "RedisError";
}
