/**
 * Waits for an item matching a predicate to appear in a growing list (log lines, job events,
 * received messages). The owner calls `arrived()` after each push.
 */
export class ArrivalWaiter<T> {
  readonly #items: readonly T[];
  readonly #waiters = new Set<() => void>();

  constructor(items: readonly T[]) {
    this.#items = items;
  }

  arrived(): void {
    for (const w of this.#waiters) w();
  }

  /** Resolves with the first match at index >= `from`; rejects after `timeoutMs` with `describe()`. */
  waitFor(pred: (item: T) => boolean, timeoutMs: number, from: number, describe: () => string): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.#items.length; i++) {
          const item = this.#items[i];
          if (item !== undefined && pred(item)) {
            done();
            resolve(item);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no match within ${timeoutMs} ms; ${describe()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }
}
