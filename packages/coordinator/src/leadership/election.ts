import type { Etcd3, Watcher } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { KeyLayout } from "../store/keys.js";
import { LeaseFence } from "./lease-fence.js";
import { LeaseKeeper } from "./lease-keeper.js";

/** The value each candidate writes under its election key. */
export interface LeaderInfo {
  readonly id: string;
  readonly address: string;
}

/** Parses an election value; undefined when it is not ours (an operator's `etcdctl elect`, say). */
export function parseLeaderInfo(raw: string | undefined): LeaderInfo | undefined {
  if (raw === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v === "object" && v !== null) {
      const { id, address } = v as Record<string, unknown>;
      if (typeof id === "string" && typeof address === "string") return { id, address };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/** Held leadership. `signal` aborts (with a CoordinatorError) the moment it is lost. */
export interface Leadership {
  /** The create revision of our election key: the leader epoch every write is fenced on. */
  readonly epoch: number;
  readonly key: string;
  readonly leaseId: string;
  readonly signal: AbortSignal;
  /**
   * Whether we may still act as leader right now: not lost, and the lease fence holds. Checked
   * synchronously before acks and writes, because a timer may fire late (a paused process).
   */
  holds(): boolean;
  /** Gives leadership up at once (revokes the lease, so the next candidate is elected now). */
  resign(): Promise<void>;
}

export interface ElectionOptions {
  readonly client: Etcd3;
  readonly keys: KeyLayout;
  readonly log: Logger;
  readonly self: LeaderInfo;
  readonly ttlSec: number;
}

/**
 * One candidacy in the etcd election, the algorithm of Go's `concurrency/election.go`
 * (the same key layout as etcd3's `Election`, hex lease ids as Go writes them): put a key
 * under the prefix bound to our lease; the candidate whose key has the lowest create
 * revision leads; everyone else waits for the key just before theirs to be deleted.
 *
 * Unlike etcd3's `Campaign`, it keeps its own lease alive and fences itself: leadership is
 * given up once `sentAt + TTL - margin` of the last acknowledged keep-alive has passed.
 */
export class Election {
  readonly #o: ElectionOptions;
  readonly #keeper: LeaseKeeper;
  readonly #fence: LeaseFence;
  #leaseId: string | undefined;
  #onFenceChange: (() => void) | undefined;

  constructor(options: ElectionOptions) {
    this.#o = options;
    this.#fence = new LeaseFence(LeaseFence.marginFor(options.ttlSec));
    this.#keeper = new LeaseKeeper(options.client, options.log, (ack) => {
      if (ack.leaseId !== this.#leaseId) return;
      this.#fence.confirm(ack.sentAt, ack.ttlSec);
      this.#onFenceChange?.();
    });
  }

  /**
   * Campaigns until elected; resolves with the leadership, rejects when `signal` aborts or
   * the lease is lost while waiting (the caller campaigns again).
   */
  async campaign(signal: AbortSignal): Promise<Leadership> {
    const { client, keys, log, self, ttlSec } = this.#o;
    const { leaseId, sentAt } = await this.#keeper.grant(ttlSec);
    this.#leaseId = leaseId;
    this.#fence.confirm(sentAt, ttlSec);
    const key = keys.electionKey(leaseId);
    const lost = new AbortController();
    const stopKeepAlive = this.#keepAliveLoop(leaseId, lost);
    const onAbort = () => lost.abort(new CoordinatorError("closed", "campaign aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    // The stop may have come while the lease was being granted.
    if (signal.aborted) onAbort();
    const resign = async () => {
      stopKeepAlive();
      if (!lost.signal.aborted) lost.abort(new CoordinatorError("deposed", "resigned"));
      this.#fence.invalidate();
      await this.#keeper
        .revoke(leaseId)
        .catch((e: unknown) => log.warn({ event: "resign_revoke_failed", err: String(e) }));
      signal.removeEventListener("abort", onAbort);
    };
    try {
      const txn = await client
        .if(key, "Create", "==", 0)
        .then(client.put(key).value(JSON.stringify(self)).lease(leaseId))
        .commit();
      const epoch = Number(txn.header.revision);
      await this.#waitForTurn(epoch, lost.signal);
      lost.signal.throwIfAborted();
      log.info({ event: "elected", epoch, key });
      const holds = () => !lost.signal.aborted && this.#fence.holds(performance.now());
      return { epoch, key, leaseId, signal: lost.signal, holds, resign };
    } catch (e) {
      await resign();
      throw e;
    }
  }

  #keepAliveLoop(leaseId: string, lost: AbortController): () => void {
    const ttlMs = this.#o.ttlSec * 1000;
    const interval = setInterval(() => this.#keeper.keepAlive(leaseId), Math.max(100, ttlMs / 3));
    this.#keeper.keepAlive(leaseId);
    let fenceTimer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(fenceTimer);
      const left = this.#fence.remainingMs(performance.now());
      if (left <= 0) {
        this.#o.log.warn({ event: "leader_lease_fence_expired", leaseId });
        lost.abort(new CoordinatorError("deposed", "election lease not confirmed in time (self-fenced)"));
        return;
      }
      fenceTimer = setTimeout(arm, left);
    };
    this.#onFenceChange = arm;
    arm();
    const stop = () => {
      clearInterval(interval);
      clearTimeout(fenceTimer);
      this.#onFenceChange = undefined;
    };
    lost.signal.addEventListener("abort", stop, { once: true });
    return stop;
  }

  /** Waits until no candidate key older than ours remains. */
  async #waitForTurn(epoch: number, signal: AbortSignal): Promise<void> {
    const { client, keys } = this.#o;
    while (!signal.aborted) {
      const older = await client
        .getAll()
        .prefix(keys.electionPrefix)
        .maxCreateRevision(String(epoch - 1))
        .sort("Create", "Descend")
        .limit(1)
        .exec();
      const first = older.kvs[0];
      if (first === undefined) return;
      await waitForDelete(client, first.key.toString(), String(Number(older.header.revision) + 1), signal);
    }
  }

  /** Stops everything this election runs (it does not revoke; call resign() for that). */
  close(): void {
    this.#keeper.close();
  }
}

async function waitForDelete(
  client: Etcd3,
  key: string,
  fromRevision: string,
  signal: AbortSignal,
): Promise<void> {
  let watcher: Watcher | undefined;
  let onAbort: (() => void) | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      client
        .watch()
        .key(key)
        .startRevision(fromRevision)
        .create()
        .then((w) => {
          watcher = w;
          if (signal.aborted) {
            reject(signal.reason);
            return;
          }
          w.on("delete", () => resolve());
          w.on("error", reject);
        }, reject);
    });
  } finally {
    if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
    await watcher?.cancel().catch(() => undefined);
  }
}
