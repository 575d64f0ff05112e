import type { Etcd3, Watcher } from "etcd3";
import type { Logger } from "pino";
import { backoffDelayMs, sleep } from "../store/backoff.js";
import { classifyEtcdError, EtcdWatchCancelledError, etcdRetryBackoff } from "../store/etcd-errors.js";
import type { EtcdHealth } from "../store/etcd-health.js";
import type { KeyLayout } from "../store/keys.js";
import { type LeaderInfo, parseLeaderInfo } from "./election.js";

/** The current leader as every replica sees it: the oldest candidate key's value. */
export interface LeaderView {
  readonly info: LeaderInfo | undefined;
  /** The leader's epoch (create revision of its key), 0 when there is none. */
  readonly epoch: number;
}

export interface LeaderWatchOptions {
  readonly client: Etcd3;
  readonly keys: KeyLayout;
  readonly log: Logger;
  /** Times and counts the watch's etcd calls, reports its failures (one log line each). */
  readonly health?: EtcdHealth;
}

/** How long close() waits for etcd to confirm a watch cancellation before giving up on it. */
const cancelWaitMs = 1000;

/**
 * Watches the election prefix so that every replica (followers above all) always knows
 * the leader's address and can name it when it refuses a worker.
 *
 * One loop: read the oldest candidate key (the leader) at revision R, watch the prefix
 * from R + 1, re-read on every change. Whatever ends the watch (a broken stream, a member
 * killed, etcd cancelling it because its revision was compacted, a failed re-read) starts
 * the loop over after a backoff, from a fresh read: the view can be late by the backoff,
 * never stale for good. Each failure logs one `etcd_error` line with the next retry delay.
 *
 * @example
 * ```ts
 * const watch = LeaderWatch.start({ client, keys, log });
 * watch.onChange((view) => console.log(view.info?.address));
 * await watch.close();
 * ```
 */
export class LeaderWatch {
  readonly #o: LeaderWatchOptions;
  readonly #closed = new AbortController();
  readonly #listeners = new Set<(view: LeaderView) => void>();
  #view: LeaderView = { info: undefined, epoch: 0 };
  #live = false;
  #loop: Promise<void> | undefined;

  private constructor(options: LeaderWatchOptions) {
    this.#o = options;
  }

  /**
   * Starts the watch loop and returns at once: with etcd unreachable the view stays empty
   * (and `live` false) while the loop retries.
   */
  static start(options: LeaderWatchOptions): LeaderWatch {
    const w = new LeaderWatch(options);
    w.#loop = w.#run();
    return w;
  }

  get view(): LeaderView {
    return this.#view;
  }

  /** Whether the view is current: read and watched with no failure since. */
  get live(): boolean {
    return this.#live;
  }

  /** Calls `fn` on each change; returns the unsubscribe function. */
  onChange(fn: (view: LeaderView) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  async #run(): Promise<void> {
    const signal = this.#closed.signal;
    let attempt = 0;
    while (!signal.aborted) {
      let established = false;
      try {
        const revision = await this.#read();
        await this.#watchFrom(revision + 1, () => {
          established = true;
        });
      } catch (e) {
        this.#live = false;
        if (signal.aborted) break;
        // A watch that worked resets the backoff: the next failure is retried quickly.
        if (established) attempt = 0;
        const delay = backoffDelayMs(attempt, etcdRetryBackoff(classifyEtcdError(e)));
        attempt += 1;
        if (this.#o.health !== undefined) this.#o.health.failed("leader_watch", e, delay, { attempt });
        else this.#o.log.warn({ event: "leader_watch_error", err: String(e), retryInMs: delay });
        await (this.#o.health === undefined ? sleep(delay, signal) : this.#o.health.sleep(delay, signal));
      }
    }
  }

  /** Reads the current leader and publishes it; resolves with the revision read at. */
  async #read(): Promise<number> {
    const { client, keys } = this.#o;
    const query = () => client.getAll().prefix(keys.electionPrefix).sort("Create", "Ascend").limit(1).exec();
    const res = await (this.#o.health === undefined ? query() : this.#o.health.call("leader_read", query));
    const kv = res.kvs[0];
    this.#publish(
      kv === undefined
        ? { info: undefined, epoch: 0 }
        : { info: parseLeaderInfo(kv.value.toString()), epoch: Number(kv.create_revision) },
    );
    return Number(res.header.revision);
  }

  /**
   * Watches the prefix from `fromRevision`, re-reading on each event (serialized: one read
   * at a time, one more if events came meanwhile). Rejects when the watch or a re-read
   * fails; resolves only on close().
   */
  async #watchFrom(fromRevision: number, onEstablished: () => void): Promise<void> {
    const { client, keys } = this.#o;
    const signal = this.#closed.signal;
    // `watcher()` (unlike `create()`) returns at once: with etcd unreachable, create()
    // would wait for a connection forever while etcd3 retries underneath.
    const watcher: Watcher = client
      .watch()
      .prefix(keys.electionPrefix)
      .startRevision(String(fromRevision))
      .watcher();
    let reading: Promise<void> | undefined;
    let again = false;
    // A watch etcd cancelled is gone from etcd3's stream already; cancelling it again would
    // wait for an answer that never comes.
    let cancelledByEtcd = false;
    try {
      await new Promise<void>((resolve, reject) => {
        const onClose = () => resolve();
        signal.addEventListener("abort", onClose, { once: true });
        const fail = (e: unknown) => {
          signal.removeEventListener("abort", onClose);
          reject(e);
        };
        const refresh = () => {
          if (reading !== undefined) {
            again = true;
            return;
          }
          reading = (async () => {
            do {
              again = false;
              await this.#read();
            } while (again && !signal.aborted);
          })()
            .catch(fail)
            .finally(() => {
              reading = undefined;
            });
        };
        watcher.on("connected", () => {
          this.#live = true;
          this.#o.health?.ok();
          onEstablished();
        });
        watcher.on("put", refresh);
        watcher.on("delete", refresh);
        // etcd3 would re-create the watch itself, from the last revision it saw; if that
        // revision is compacted meanwhile, etcd cancels it and the view stays stale. Start
        // over from a fresh read instead.
        watcher.on("disconnected", fail);
        watcher.on("error", (e: unknown) => {
          cancelledByEtcd = true;
          fail(new EtcdWatchCancelledError(e));
        });
      });
    } finally {
      watcher.removeAllListeners("put");
      watcher.removeAllListeners("delete");
      // Keep an error listener: an EventEmitter "error" with none would throw.
      watcher.removeAllListeners("error");
      watcher.on("error", () => undefined);
      if (!cancelledByEtcd) await settleWithin(watcher.cancel(), cancelWaitMs);
      await reading;
    }
  }

  #publish(next: LeaderView): void {
    if (next.epoch === this.#view.epoch && next.info?.address === this.#view.info?.address) return;
    this.#view = next;
    this.#o.log.info({
      event: "leader_observed",
      leader: next.info?.id ?? null,
      leaderAddress: next.info?.address ?? null,
      leaderEpoch: next.epoch,
    });
    for (const fn of this.#listeners) fn(next);
  }

  /** Stops the loop and cancels the watch. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed.signal.aborted) {
      this.#closed.abort();
      this.#listeners.clear();
    }
    await this.#loop;
  }
}

/** Waits for `p` to settle, at most `ms` (leaving no timer behind). */
async function settleWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => undefined), new Promise((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}
