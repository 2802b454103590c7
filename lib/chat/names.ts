/**
 * One room's names: who holds which (unique by {@link nameKey}: case, width and look-alikes
 * folded), a free variant for whoever asks for a taken one (`alice-2`), and who waits to get the
 * name they asked for back. Every step costs O(1) amortised, whatever names are asked for: 4000
 * people asking for `a` cost 4000 steps, not 8 million.
 *
 * Names held on other hubs (instances or workers sharing the chat) count as taken too: the hub
 * passes them in as `elsewhere`.
 */

import { MAX_NAME, nameKey } from "../protocol/text.ts";

/** What a room's names need of a member. */
export interface Named {
  name: string;
  /** The name it asked for; `name` may carry a suffix where that one was taken. */
  wanted: string;
  /** The key it is filed under among those waiting, while it waits for `wanted`. */
  waitingFor?: string | undefined;
}

export class RoomNames<M extends Named> {
  /** Members by the key of the name they hold. */
  readonly #holders = new Map<string, M>();
  /** Members under another name than the one they asked for, by its key, in the order they came. */
  readonly #waiting = new Map<string, Set<M>>();
  /**
   * For a name asked for by several (by key): the lowest suffix that may be free. Allocation
   * starts there rather than at 2.
   */
  #suffixFrom: Map<string, number> | undefined;

  constructor(readonly elsewhere: (key: string) => boolean = () => false) {}

  /** Who holds a name here (by its key), if anyone. */
  holder(name: string): M | undefined {
    return this.#holders.get(nameKey(name));
  }

  /** Whether a name is held here or elsewhere. */
  taken(name: string): boolean {
    const key = nameKey(name);
    return this.#holders.has(key) || this.elsewhere(key);
  }

  /** `base`, or `base-2`, `base-3`… (shortened to fit) when it is taken. */
  free(base: string): string {
    if (!this.taken(base)) return base;
    const key = nameKey(base);
    this.#suffixFrom ??= new Map();
    for (let n = this.#suffixFrom.get(key) ?? 2;; n++) {
      const suffix = `-${n}`;
      const name = [...base].slice(0, MAX_NAME - suffix.length).join("") + suffix;
      if (!this.taken(name)) {
        this.#suffixFrom.set(key, n + 1);
        return name;
      }
    }
  }

  /** Files a member under its name (and as waiting for the one it wanted, if it differs). */
  add(member: M): void {
    this.#holders.set(nameKey(member.name), member);
    this.#setWaiting(member, member.name !== member.wanted);
  }

  /** Unfiles a member, under the name it holds now. */
  remove(member: M): void {
    this.#holders.delete(nameKey(member.name));
    this.#freed(member.name);
    this.#setWaiting(member, false);
  }

  /** Gives a member another name. */
  rename(member: M, name: string): void {
    this.remove(member);
    member.name = name;
    this.add(member);
  }

  /** The first member waiting for a name that just freed up here and elsewhere, if any. */
  claimant(freed: string): M | undefined {
    if (this.taken(freed)) return undefined;
    return this.#waiting.get(nameKey(freed))?.values().next().value;
  }

  #setWaiting(member: M, waiting: boolean): void {
    const old = member.waitingFor;
    if (old !== undefined) {
      const set = this.#waiting.get(old);
      set?.delete(member);
      if (set?.size === 0) this.#waiting.delete(old);
      member.waitingFor = undefined;
    }
    if (!waiting) return;
    const key = nameKey(member.wanted);
    let set = this.#waiting.get(key);
    if (!set) this.#waiting.set(key, set = new Set());
    set.add(member);
    member.waitingFor = key;
  }

  /** A suffixed name was given up: allocation for its base may start there again. */
  #freed(name: string): void {
    const match = /^(.*)-(\d+)$/u.exec(name);
    if (!match || !this.#suffixFrom) return;
    const key = nameKey(match[1]!);
    const from = this.#suffixFrom.get(key);
    if (from !== undefined && Number(match[2]) < from) this.#suffixFrom.set(key, Number(match[2]));
  }
}
