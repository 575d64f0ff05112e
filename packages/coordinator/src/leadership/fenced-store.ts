import type { Etcd3, IOperation } from "etcd3";
import { CoordinatorError } from "../errors.js";

/**
 * Every write the leader makes goes through here: one etcd transaction guarded by "my
 * election key still exists with my create revision" (DESIGN.md, Fencing). A deposed
 * leader (paused, partitioned, superseded) cannot write anything: its transactions fail
 * the guard, and it also refuses locally once its lease fence has run out.
 */
export class FencedStore {
  readonly #client: Etcd3;
  readonly #electionKey: string;
  readonly #epoch: number;
  readonly #holds: () => boolean;
  readonly #onDeposed: (e: CoordinatorError) => void;
  /** Writes committed (for metrics and the etcd-cost benchmark). */
  writes = 0;

  constructor(
    client: Etcd3,
    electionKey: string,
    epoch: number,
    holds: () => boolean,
    onDeposed: (e: CoordinatorError) => void,
  ) {
    this.#client = client;
    this.#electionKey = electionKey;
    this.#epoch = epoch;
    this.#holds = holds;
    this.#onDeposed = onDeposed;
  }

  get client(): Etcd3 {
    return this.#client;
  }

  /** Commits `ops` atomically if we still lead; resolves with the revision, throws `deposed` otherwise. */
  async commit(...ops: IOperation[]): Promise<number> {
    if (!this.#holds()) throw this.#deposed("leadership fence expired before the write");
    let res: Awaited<ReturnType<ReturnType<Etcd3["if"]>["commit"]>>;
    try {
      res = await this.#client
        .if(this.#electionKey, "Create", "==", this.#epoch)
        .then(...ops)
        .commit();
    } catch (e) {
      throw CoordinatorError.from(e, "etcd_unavailable");
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
