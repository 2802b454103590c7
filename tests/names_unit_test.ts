/** A room's names (lib/chat/names.ts), in-process. */

import assert from "node:assert/strict";
import { type Named, RoomNames } from "../lib/chat/names.ts";

const member = (name: string): Named => ({ name, wanted: name });

function join(names: RoomNames<Named>, wanted: string): Named {
  const m = member(wanted);
  m.name = names.free(wanted);
  names.add(m);
  return m;
}

Deno.test("names: a taken name gets the lowest free suffix; look-alikes count as taken", () => {
  const names = new RoomNames<Named>();
  const alice = join(names, "alice");
  assert.equal(join(names, "Alice").name, "Alice-2");
  assert.equal(join(names, "аlice").name, "аlice-3", "Cyrillic а: the same name");
  assert.equal(names.holder("ALICE"), alice);
  names.remove(alice);
  assert.equal(names.holder("alice"), undefined);
});

Deno.test("names: a freed suffix is given out again, and 4000 asking for one name take 4000 steps", () => {
  const names = new RoomNames<Named>();
  const all = Array.from({ length: 4000 }, () => join(names, "a"));
  assert.equal(all.at(-1)!.name, "a-4000");
  const tenth = all[9]!; // a-10
  names.remove(tenth);
  assert.equal(join(names, "a").name, "a-10", "the freed suffix first");
  assert.equal(join(names, "a").name, "a-4001");
});

Deno.test("names: who waits for a name gets it back first, in the order they came", () => {
  const names = new RoomNames<Named>();
  const alice = join(names, "alice");
  const second = join(names, "alice");
  const third = join(names, "alice");
  assert.equal(names.claimant("alice"), undefined, "not while it is held");
  names.remove(alice);
  assert.equal(names.claimant("alice"), second);
  names.rename(second, "alice");
  assert.equal(names.claimant("alice"), undefined);
  names.remove(second);
  assert.equal(names.claimant("alice"), third);
});

Deno.test("names: a name held elsewhere (another instance) is taken here too", () => {
  const elsewhere = new Set(["bob"]);
  const names = new RoomNames<Named>((key) => elsewhere.has(key));
  assert.ok(names.taken("Bob"));
  assert.equal(join(names, "bob").name, "bob-2");
  const waiting = names.claimant("bob");
  assert.equal(waiting, undefined, "still held elsewhere");
  elsewhere.clear();
  assert.equal(names.claimant("bob")?.name, "bob-2");
});
