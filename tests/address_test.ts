import assert from "node:assert/strict";
import { addressGroup, canonical } from "../lib/base/address.ts";

Deno.test("addressGroup(): IPv4 clients by address, IPv6 clients by their /64, one spelling each", () => {
  assert.equal(addressGroup("203.0.113.7"), "203.0.113.7");
  assert.equal(addressGroup(canonical("::ffff:203.0.113.7")), "203.0.113.7");
  const one = addressGroup("2001:db8:1:2::1");
  for (
    const other of [
      "2001:db8:1:2:aaaa:bbbb:cccc:dddd",
      "2001:0db8:0001:0002:0000:0000:0000:0009",
      "2001:DB8:1:2::ffff",
      "2001:db8:1:2:0:0:1.2.3.4",
    ]
  ) assert.equal(addressGroup(other), one, other);
  assert.equal(one, "2001:db8:1:2::/64");
  assert.notEqual(addressGroup("2001:db8:1:3::1"), one, "the next /64 is another client");
  assert.equal(addressGroup("::1"), "0:0:0:0::/64");
  assert.equal(addressGroup("fe80::1%eth0"), "fe80:0:0:0::/64");
  assert.equal(addressGroup("2001:db8::"), "2001:db8:0:0::/64");
});
