import type { Etcd3, Watcher } from "etcd3";
import type { Logger } from "pino";
import type { KeyLayout } from "../store/keys.js";
import { type LeaderInfo, parseLeaderInfo } from "./election.js";

/** The current leader as every replica sees it: the oldest candidate key's value. */
export interface LeaderView {
  readonly info: LeaderInfo | undefined;
  /** The leader's epoch (create revision of its key), 0 when there is none. */
  readonly epoch: number;
}

/**
 * Watches the election prefix so that every replica (followers above all) always knows
 * the leader's address and can name it when it refuses a worker.
 */
export class LeaderWatch {
  readonly #client: Etcd3;
  readonly #keys: KeyLayout;
  readonly #log: Logger;
  #watcher: Watcher | undefined;
  #view: LeaderView = { info: undefined, epoch: 0 };
  #refreshing: Promise<void> | undefined;
  #again = false;
  #closed = false;
  readonly #listeners = new Set<(view: LeaderView) => void>();

  private constructor(client: Etcd3, keys: KeyLayout, log: Logger) {
    this.#client = client;
    this.#keys = keys;
    this.#log = log;
  }

  /** Starts watching; resolves once the current leader (or its absence) is known. */
  static async start(client: Etcd3, keys: KeyLayout, log: Logger): Promise<LeaderWatch> {
    const w = new LeaderWatch(client, keys, log);
    const watcher = await client.watch().prefix(keys.electionPrefix).create();
    w.#watcher = watcher;
    watcher.on("put", () => w.#refresh());
    watcher.on("delete", () => w.#refresh());
    watcher.on("connected", () => w.#refresh());
    watcher.on("error", (err) => log.warn({ event: "leader_watch_error", err: err.message }));
    await w.#refresh();
    return w;
  }

  get view(): LeaderView {
    return this.#view;
  }

  /** Calls `fn` on each change; returns the unsubscribe function. */
  onChange(fn: (view: LeaderView) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #refresh(): Promise<void> {
    if (this.#refreshing !== undefined) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      do {
        this.#again = false;
        try {
          const res = await this.#client
            .getAll()
            .prefix(this.#keys.electionPrefix)
            .sort("Create", "Ascend")
            .limit(1)
            .exec();
          const kv = res.kvs[0];
          const next: LeaderView =
            kv === undefined
              ? { info: undefined, epoch: 0 }
              : { info: parseLeaderInfo(kv.value.toString()), epoch: Number(kv.create_revision) };
          if (next.epoch !== this.#view.epoch || next.info?.address !== this.#view.info?.address) {
            this.#view = next;
            this.#log.info({
              event: "leader_observed",
              leader: next.info?.id ?? null,
              leaderAddress: next.info?.address ?? null,
              leaderEpoch: next.epoch,
            });
            for (const fn of this.#listeners) fn(next);
          }
        } catch (e) {
          if (!this.#closed) this.#log.warn({ event: "leader_refresh_failed", err: String(e) });
        }
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.clear();
    await this.#watcher?.cancel().catch(() => undefined);
    await this.#refreshing;
  }
}
