/**
 * Keyed deadlines (pure; the caller passes the time): each key has at most one deadline,
 * `schedule` replaces it, and `due(now)` hands back every key whose deadline has come.
 *
 * It replaces a periodic scan of every member: heartbeats only move a member's last-heard
 * time, and the member is looked at again only when its earliest deadline (expiry, idle
 * stream, lease keep-alive, end of a wait) comes, then rescheduled. A binary min-heap with
 * lazy deletion: a rescheduled key leaves its old entry behind, skipped when popped, and the
 * heap is rebuilt when stale entries outnumber live ones, so memory stays O(keys).
 */
export class DeadlineQueue<K> {
  readonly #at = new Map<K, number>();
  #heap: { at: number; key: K }[] = [];

  /** Number of keys with a deadline. */
  get size(): number {
    return this.#at.size;
  }

  /** Sets (or moves, earlier or later) the deadline of `key`. */
  schedule(key: K, at: number): void {
    if (Number.isNaN(at)) throw new RangeError("deadline is NaN");
    if (this.#at.get(key) === at) return;
    this.#at.set(key, at);
    this.#push({ at, key });
    if (this.#heap.length > 64 && this.#heap.length > 2 * this.#at.size) this.#rebuild();
  }

  /** Removes the deadline of `key`, if any. */
  cancel(key: K): void {
    this.#at.delete(key);
  }

  /** The deadline of `key`, or undefined. */
  deadlineOf(key: K): number | undefined {
    return this.#at.get(key);
  }

  /** The earliest deadline, or undefined when empty. */
  peek(): number | undefined {
    this.#dropStale();
    return this.#heap[0]?.at;
  }

  /** Removes and returns every key whose deadline is `<= now`, earliest first. */
  due(now: number): K[] {
    const out: K[] = [];
    for (;;) {
      this.#dropStale();
      const top = this.#heap[0];
      if (top === undefined || top.at > now) return out;
      this.#pop();
      this.#at.delete(top.key);
      out.push(top.key);
    }
  }

  #dropStale(): void {
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || this.#at.get(top.key) === top.at) return;
      this.#pop();
    }
  }

  #rebuild(): void {
    this.#heap = [...this.#at].map(([key, at]) => ({ at, key }));
    for (let i = (this.#heap.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #push(e: { at: number; key: K }): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = h[parent];
      if (p === undefined || p.at <= e.at) break;
      h[i] = p;
      i = parent;
    }
    h[i] = e;
  }

  #pop(): void {
    const h = this.#heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    h[0] = last;
    this.#down(0);
  }

  #down(start: number): void {
    const h = this.#heap;
    const e = h[start];
    if (e === undefined) return;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const left = h[l];
      const right = h[r];
      const c = right !== undefined && left !== undefined && right.at < left.at ? r : l;
      const child = h[c];
      if (child === undefined || child.at >= e.at) break;
      h[i] = child;
      i = c;
    }
    h[i] = e;
  }
}
