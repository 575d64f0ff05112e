import type { Etcd3, IKeyValue, Watcher } from "etcd3";
import type { Logger } from "pino";

/**
 * Watches the operator's keys of one group (`config` and `control`, adjacent in key order, so
 * one watcher covers both) and reports every change. A watch that fails or is cancelled (a
 * compacted revision, an etcd restart) is re-created after a pause, and the keys are read
 * again then, so a change made meanwhile is not missed.
 */
export class ControlWatch {
  readonly #client: Etcd3;
  readonly #keys: readonly string[];
  readonly #onChange: (key: string, value: string | undefined) => void;
  readonly #log: Logger;
  #watcher: Watcher | undefined;
  #retry: NodeJS.Timeout | undefined;
  #failures = 0;
  #closed = false;

  constructor(
    client: Etcd3,
    keys: readonly [string, string],
    onChange: (key: string, value: string | undefined) => void,
    log: Logger,
  ) {
    this.#client = client;
    this.#keys = [...keys].sort();
    this.#onChange = onChange;
    this.#log = log;
  }

  /** Starts watching from `fromRevision` (the revision the caller read the keys at). */
  start(fromRevision: string | undefined): void {
    void this.#open(fromRevision);
  }

  async #open(fromRevision: string | undefined): Promise<void> {
    if (this.#closed) return;
    const [first, last] = [this.#keys[0] ?? "", this.#keys.at(-1) ?? ""];
    try {
      let b = this.#client.watch().inRange({ start: first, end: `${last}\0` });
      if (fromRevision !== undefined) b = b.startRevision(fromRevision);
      const w = await b.create();
      if (this.#closed) {
        await w.cancel().catch(() => undefined);
        return;
      }
      this.#watcher = w;
      this.#failures = 0;
      const report = (kv: IKeyValue, deleted: boolean) =>
        this.#onChange(kv.key.toString(), deleted ? undefined : kv.value.toString());
      w.on("put", (kv) => report(kv, false));
      w.on("delete", (kv) => report(kv, true));
      w.on("error", (err) => this.#reopen(String(err)));
      w.on("end", () => this.#reopen("watch ended"));
    } catch (e) {
      this.#reopen(String(e));
    }
  }

  #reopen(why: string): void {
    if (this.#closed || this.#retry !== undefined) return;
    const old = this.#watcher;
    this.#watcher = undefined;
    void old?.cancel().catch(() => undefined);
    this.#failures += 1;
    const delayMs = Math.min(10_000, 250 * 2 ** Math.min(this.#failures, 6));
    this.#log.warn({ event: "control_watch_failed", keys: this.#keys, err: why, retryInMs: delayMs });
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      void this.#reread().then(
        (revision) => this.#open(revision),
        (e: unknown) => this.#reopen(String(e)),
      );
    }, delayMs);
  }

  /**
   * After a gap in the watch: reports the keys as they are now, and returns the revision to
   * resume watching from (the one after this read), so nothing between is missed.
   */
  async #reread(): Promise<string> {
    const [first, last] = [this.#keys[0] ?? "", this.#keys.at(-1) ?? ""];
    const res = await this.#client
      .getAll()
      .inRange({ start: first, end: `${last}\0` })
      .exec();
    if (!this.#closed) {
      for (const key of this.#keys) {
        const kv = res.kvs.find((k) => k.key.toString() === key);
        this.#onChange(key, kv?.value.toString());
      }
    }
    return String(BigInt(res.header.revision) + 1n);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    await this.#watcher?.cancel().catch(() => undefined);
    this.#watcher = undefined;
  }
}
