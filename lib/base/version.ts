/** natter's version, read from deno.json at build time so there is one place to bump it. */

import meta from "../../deno.json" with { type: "json" };

/** The version in deno.json, e.g. "0.1.0". */
export const VERSION: string = meta.version;
