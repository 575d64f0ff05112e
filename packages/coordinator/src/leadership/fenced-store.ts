import type { Etcd3, IOperation, ITxnResponse } from "etcd3";
import { CoordinatorError } from "../errors.js";
import { etcdFailure } from "../store/etcd-errors.js";
import type { EtcdHealth } from "../store/etcd-health.js";

/**
 * Every write the leader makes goes through here: one etcd transaction guarded by "my
 * election key still exists with my create revision" (DESIGN.md, Fencing). A deposed
 * leader (paused, partitioned, superseded) cannot write anything: its transactions fail
 * the guard, and it also refuses locally once its lease fence has run out.
 *
 * A write etcd refuses or does not answer throws a CoordinatorError whose code says what a
 * retry can do (`etcd_unavailable`, `etcd_nospace`, `etcd_auth`, `etcd_failed`; see
 * `classifyEtcdError` for the kind and `etcdRetryBackoff` for the delay); the caller owns
 * the retry and its log line. With `health`, every commit is timed and every failure
 * counted (`shard_etcd_*{op="fenced_commit"}`).
 */
export class FencedStore {
  readonly #client: Etcd3;
  readonly #electionKey: string;
  readonly #epoch: number;
  readonly #holds: () => boolean;
  readonly #onDeposed: (e: CoordinatorError) => void;
  readonly #health: EtcdHealth | undefined;
  /** Writes committed (for metrics and the etcd-cost benchmark). */
  writes = 0;

  constructor(
    client: Etcd3,
    electionKey: string,
    epoch: number,
    holds: () => boolean,
    onDeposed: (e: CoordinatorError) => void,
    health?: EtcdHealth,
  ) {
    this.#client = client;
    this.#electionKey = electionKey;
    this.#epoch = epoch;
    this.#holds = holds;
    this.#onDeposed = onDeposed;
    this.#health = health;
  }

  get client(): Etcd3 {
    return this.#client;
  }

  /** Commits `ops` atomically if we still lead; resolves with the revision, throws `deposed` otherwise. */
  async commit(...ops: IOperation[]): Promise<number> {
    if (!this.#holds()) throw this.#deposed("leadership fence expired before the write");
    let res: ITxnResponse;
    const txn = () =>
      this.#client
        .if(this.#electionKey, "Create", "==", this.#epoch)
        .then(...ops)
        .commit();
    try {
      res = await (this.#health === undefined ? txn() : this.#health.call("fenced_commit", txn));
    } catch (e) {
      throw etcdFailure(e, "fenced write failed");
    }
    if (!res.succeeded)
      throw this.#deposed(`election key ${this.#electionKey} no longer has create revision ${this.#epoch}`);
    this.writes += 1;
    return Number(res.header.revision);
  }

  #deposed(why: string): CoordinatorError {
    const e = new CoordinatorError("deposed", `fenced write refused: ${why}`);
    this.#onDeposed(e);
    return e;
  }
}
