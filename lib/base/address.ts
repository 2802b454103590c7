/**
 * Client addresses as per-address limits count them. One IPv6 host is usually given a whole
 * /64 (and picks new addresses in it at will, RFC 8981), so a limit per IPv6 address would be
 * no limit: IPv6 clients are counted by their /64, IPv4 clients by their address.
 */

/** The address without an IPv4-mapped IPv6 prefix (`::ffff:1.2.3.4` is `1.2.3.4`). */
export function canonical(address: string | undefined): string {
  return (address ?? "unknown").replace(/^::ffff:(?=\d+\.)/i, "");
}

/** What per-address limits count a client under: its IPv4 address, or its IPv6 /64. */
export function addressGroup(address: string): string {
  if (!address.includes(":")) return address;
  const bare = address.replace(/%.*$/, "").toLowerCase(); // a zone (fe80::1%eth0) is local
  const [head = "", tail] = bare.split("::", 2) as [string, string | undefined];
  const left = head === "" ? [] : head.split(":");
  if (tail === undefined) return `${left.slice(0, 4).map(group).join(":")}::/64`;
  const right = tail === "" ? [] : tail.split(":");
  // IPv4 in the last 32 bits (::ffff:1.2.3.4 is handled by canonical) counts as two groups.
  const rightGroups = right.reduce((n, part) => n + (part.includes(".") ? 2 : 1), 0);
  const zeros = Math.max(0, 8 - left.length - rightGroups);
  const groups = [...left, ...Array(zeros).fill("0"), ...right];
  return `${groups.slice(0, 4).map(group).join(":")}::/64`;
}

/** One group without leading zeros, so that one /64 always has one spelling. */
function group(part: string): string {
  return part.replace(/^0+(?=.)/, "");
}
