/** Options of {@link mergeAscending}. */
export interface MergeAscendingOptions {
  /**
   * How many sources are asked for their first item at once (each first item of a paged
   * source is a round trip; asking all of them one after another would add up).
   * @default 16
   */
  readonly concurrency?: number;
}

interface Head<T> {
  readonly item: T;
  readonly source: number;
}

/**
 * Merges sources that each yield ascending items (by `compare`) into one ascending stream.
 *
 * Pulled, never pushed: a source is asked for its next item only when its previous one has
 * been yielded and the consumer asks for more, so the merge holds one item per source (plus
 * what each source buffers) and a consumer that stops reading stops every source. Ties go
 * to the lower source index. Returning early (or a failing source) closes every source.
 *
 * @example
 * ```ts
 * for await (const n of mergeAscending([from([1, 4]), from([2, 3])], (a, b) => a - b)) log(n);
 * // 1, 2, 3, 4
 * ```
 */
export async function* mergeAscending<T>(
  sources: readonly AsyncIterable<T>[],
  compare: (a: T, b: T) => number,
  options: MergeAscendingOptions = {},
): AsyncGenerator<T, void, undefined> {
  const concurrency = Math.max(1, options.concurrency ?? 16);
  const iterators = sources.map((s) => s[Symbol.asyncIterator]());
  const open = new Set<number>(iterators.keys());
  const heap: Head<T>[] = [];
  const less = (a: Head<T>, b: Head<T>) => {
    const c = compare(a.item, b.item);
    return c < 0 || (c === 0 && a.source < b.source);
  };
  const push = (h: Head<T>) => {
    heap.push(h);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as Head<T>;
      if (!less(h, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = h;
  };
  const pop = (): Head<T> | undefined => {
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= heap.length) break;
      const r = l + 1;
      const child = r < heap.length && less(heap[r] as Head<T>, heap[l] as Head<T>) ? r : l;
      if (!less(heap[child] as Head<T>, last)) break;
      heap[i] = heap[child] as Head<T>;
      i = child;
    }
    heap[i] = last;
    return top;
  };
  const advance = async (source: number): Promise<void> => {
    const it = iterators[source] as AsyncIterator<T>;
    const r = await it.next();
    if (r.done === true) open.delete(source);
    else push({ item: r.value, source });
  };
  try {
    const all = [...iterators.keys()];
    for (let i = 0; i < all.length; i += concurrency)
      await Promise.all(all.slice(i, i + concurrency).map(advance));
    for (;;) {
      const head = pop();
      if (head === undefined) return;
      yield head.item;
      await advance(head.source);
    }
  } finally {
    // Sources still open (an early return, or another source failed) must release what
    // they hold; one that failed is already done.
    await Promise.allSettled([...open].map((i) => iterators[i]?.return?.()));
  }
}
