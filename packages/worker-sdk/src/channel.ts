/**
 * A push-to-pull queue: `push()` from callbacks, `for await` on the other side. Used for the
 * request side of the HeartbeatStream and for event subscriptions. `close()` ends iteration.
 */
export class Channel<T> implements AsyncIterable<T> {
  readonly #items: T[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  readonly #limit: number;

  /** `limit`: items kept for a slow consumer; the oldest are dropped beyond it. */
  constructor(limit = Number.POSITIVE_INFINITY) {
    this.#limit = limit;
  }

  push(item: T): void {
    if (this.#closed) return;
    this.#items.push(item);
    if (this.#items.length > this.#limit) this.#items.shift();
    this.#wake?.();
  }

  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }
}
