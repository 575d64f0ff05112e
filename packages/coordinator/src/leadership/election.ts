import type { Etcd3, ITxnResponse, Watcher } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import { Backoff, sleep } from "../store/backoff.js";
import { classifyEtcdError, EtcdWatchCancelledError } from "../store/etcd-errors.js";
import type { EtcdHealth } from "../store/etcd-health.js";
import type { KeyLayout } from "../store/keys.js";
import { LeaseFence } from "./lease-fence.js";
import { LeaseKeeper } from "./lease-keeper.js";

/** The value each candidate writes under its election key. */
export interface LeaderInfo {
  readonly id: string;
  readonly address: string;
  /** The HTTP address of its console and `/status` (absent: none, or an older replica). */
  readonly http?: string;
  /** Whether that listener serves HTTPS (with the gRPC certificate). */
  readonly httpTls?: boolean;
}

/** Parses an election value; undefined when it is not ours (an operator's `etcdctl elect`, say). */
export function parseLeaderInfo(raw: string | undefined): LeaderInfo | undefined {
  if (raw === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v === "object" && v !== null) {
      const { id, address, http, httpTls } = v as Record<string, unknown>;
      if (typeof id === "string" && typeof address === "string")
        return typeof http === "string" && http !== ""
          ? { id, address, http, ...(httpTls === true ? { httpTls } : {}) }
          : { id, address };
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
  /** Times and counts the election's etcd calls and learns from its keep-alives that etcd answers. */
  /** Each keep-alive round trip of the election lease, in seconds (a metric). */
  readonly onKeepAlive?: (seconds: number) => void;
  readonly health?: EtcdHealth;
  /**
   * Called when resigning could not revoke the lease (etcd unreachable). Its key then stays
   * until the lease expires, and etcd renews every lease by its full TTL when it elects a
   * new etcd leader, so a caller that revokes it once etcd answers again lets the next
   * candidate lead a TTL sooner after an etcd outage.
   */
  readonly onRevokeFailed?: (leaseId: string) => void;
}

/**
 * One candidacy in the etcd election, the algorithm of Go's `concurrency/election.go`
 * (the same key layout as etcd3's `Election`, hex lease ids as Go writes them): put a key
 * under the prefix bound to our lease; the candidate whose key has the lowest create
 * revision leads; everyone else waits for the key just before theirs to be deleted.
 *
 * Unlike etcd3's `Campaign`, it keeps its own lease alive and fences itself: leadership is
 * given up once `sentAt + TTL - margin` of the last acknowledged keep-alive has passed.
 *
 * Every step survives a lost answer: the candidate key is put with
 * `If(CreateRevision(key) == 0) Then(Put) Else(Get)` (Go's `Campaign`), so a retry after an
 * attempt that committed but whose answer was lost finds our own key (bound to our lease)
 * and takes its create revision as the epoch, instead of waiting forever for it to go away.
 * Transient failures are retried with the same lease for as long as its fence holds.
 */
export class Election {
  readonly #o: ElectionOptions;
  readonly #keeper: LeaseKeeper;
  readonly #fence: LeaseFence;
  // Reads of a predecessor's key still in flight (see waitForDelete), awaited by close().
  readonly #polls = new Set<Promise<unknown>>();
  #leaseId: string | undefined;
  #onFenceChange: (() => void) | undefined;

  constructor(options: ElectionOptions) {
    this.#o = options;
    this.#fence = new LeaseFence(LeaseFence.marginFor(options.ttlSec));
    this.#keeper = new LeaseKeeper(
      options.client,
      options.log,
      (ack) => {
        if (ack.leaseId !== this.#leaseId) return;
        options.onKeepAlive?.((performance.now() - ack.sentAt) / 1000);
        options.health?.ok();
        this.#fence.confirm(ack.sentAt, ack.ttlSec);
        this.#onFenceChange?.();
      },
      { stallMs: Math.max(250, (options.ttlSec * 1000) / 8) },
    );
  }

  /**
   * Campaigns until elected; resolves with the leadership, rejects when `signal` aborts or
   * the lease is lost while waiting (the caller campaigns again).
   */
  async campaign(signal: AbortSignal): Promise<Leadership> {
    const { keys, log, ttlSec } = this.#o;
    const { leaseId, sentAt } = await this.#call("lease_grant", () => this.#keeper.grant(ttlSec));
    this.#leaseId = leaseId;
    this.#fence.confirm(sentAt, ttlSec);
    const key = keys.electionKey(leaseId);
    const lost = new AbortController();
    const stopKeepAlive = this.#keepAliveLoop(leaseId, lost);
    const onAbort = () => lost.abort(new CoordinatorError("closed", "campaign aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    // The stop may have come while the lease was being granted.
    if (signal.aborted) onAbort();
    let resigning: Promise<void> | undefined;
    // Idempotent: the campaign, the leader's end and close() may each call it.
    const resign = () => (resigning ??= resignOnce());
    const resignOnce = async () => {
      stopKeepAlive();
      if (!lost.signal.aborted) lost.abort(new CoordinatorError("deposed", "resigned"));
      this.#fence.invalidate();
      // Not retried here (resign must not wait): the lease ends by its TTL anyway, and the
      // owner may revoke it later through onRevokeFailed.
      await this.#call("lease_revoke", () => this.#keeper.revoke(leaseId)).catch((e: unknown) => {
        if (this.#o.health === undefined) log.warn({ event: "resign_revoke_failed", err: String(e) });
        else this.#o.health.failed("lease_revoke", e, undefined);
        this.#o.onRevokeFailed?.(leaseId);
      });
      signal.removeEventListener("abort", onAbort);
    };
    try {
      const epoch = await this.#putCandidateKey(key, leaseId, lost.signal);
      await this.#waitForTurn(epoch, lost.signal);
      lost.signal.throwIfAborted();
      const holds = () => !lost.signal.aborted && this.#fence.holds(performance.now());
      return { epoch, key, leaseId, signal: lost.signal, holds, resign };
    } catch (e) {
      await resign();
      throw e;
    }
  }

  #keepAliveLoop(leaseId: string, lost: AbortController): () => void {
    const ttlMs = this.#o.ttlSec * 1000;
    // Every TTL/6 (Go's client: TTL/3): a stream stalled on a partitioned etcd member is
    // then noticed and replaced (the keeper's stallMs, TTL/8) with more than half the fence
    // left for the remaining members to elect a raft leader and answer.
    const interval = setInterval(() => this.#keeper.keepAlive(leaseId), Math.max(100, ttlMs / 6));
    this.#keeper.keepAlive(leaseId);
    let fenceTimer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(fenceTimer);
      const left = this.#fence.remainingMs(performance.now());
      if (left <= 0) {
        this.#o.log.warn({ event: "leader_lease_fence_expired", leaseId });
        // The only way here is etcd not acknowledging keep-alives: say so in the cause,
        // so the failure is classified (and logged) as etcd being unavailable.
        const cause = new CoordinatorError(
          "etcd_unavailable",
          "no election lease keep-alive acknowledged in time",
        );
        lost.abort(
          new CoordinatorError("deposed", "election lease not confirmed in time (self-fenced)", { cause }),
        );
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

  /**
   * Puts our candidate key and returns its create revision (our epoch if we get to lead),
   * the way Go's `Campaign` does: `If(CreateRevision(key) == 0) Then(Put) Else(Get)`.
   * A transient failure leaves it unknown whether the put committed, so it is retried
   * (same lease, backoff) until it answers or the lease's fence expires; when the answer
   * shows the key already there, an earlier attempt committed and the key is ours.
   */
  async #putCandidateKey(key: string, leaseId: string, signal: AbortSignal): Promise<number> {
    const { client, self } = this.#o;
    const backoff = new Backoff({ baseMs: 250, maxMs: 1000 });
    for (;;) {
      signal.throwIfAborted();
      let res: ITxnResponse;
      try {
        res = await this.#call("campaign", () =>
          client
            .if(key, "Create", "==", 0)
            .then(client.put(key).value(JSON.stringify(self)).lease(leaseId))
            .else(client.get(key))
            .commit(),
        );
      } catch (e) {
        await this.#retryOrThrow("campaign", e, backoff, signal);
        continue;
      }
      if (res.succeeded) return Number(res.header.revision);
      return this.#ownExistingKey(key, leaseId, res);
    }
  }

  /** The Else branch answered: the key exists. It is ours if it is bound to our lease. */
  #ownExistingKey(key: string, leaseId: string, res: ITxnResponse): number {
    const kv = res.responses[0]?.response_range?.kvs[0];
    if (kv === undefined) {
      // Cannot happen (the Else branch ran because the key existed, in the same revision).
      throw new CoordinatorError("invalid_data", `election key ${key} neither created nor found`);
    }
    if (kv.lease !== leaseId) {
      // Our key's name is our lease id, so only an operator could have put it: leave it.
      throw new CoordinatorError(
        "invalid_data",
        `election key ${key} exists bound to lease ${kv.lease}, not to ours (${leaseId})`,
      );
    }
    const epoch = Number(kv.create_revision);
    this.#o.log.warn({
      event: "campaign_key_recovered",
      key,
      campaignEpoch: epoch,
      detail: "an earlier attempt of the campaign transaction committed but its answer was lost",
    });
    return epoch;
  }

  /** Waits until no candidate key older than ours remains. */
  async #waitForTurn(epoch: number, signal: AbortSignal): Promise<void> {
    const { client, keys } = this.#o;
    const backoff = new Backoff({ baseMs: 250, maxMs: 1000 });
    for (;;) {
      signal.throwIfAborted();
      let first: { key: string; revision: string } | undefined;
      try {
        const older = await this.#call("campaign_read", () =>
          client
            .getAll()
            .prefix(keys.electionPrefix)
            .maxCreateRevision(String(epoch - 1))
            .sort("Create", "Descend")
            .limit(1)
            .exec(),
        );
        const kv = older.kvs[0];
        if (kv === undefined) return;
        first = { key: kv.key.toString(), revision: String(Number(older.header.revision) + 1) };
      } catch (e) {
        await this.#retryOrThrow("campaign_read", e, backoff, signal);
        continue;
      }
      try {
        await waitForDelete(client, first.key, first.revision, signal, this.#polls);
        backoff.reset();
      } catch (e) {
        // A cancelled watch (its start revision compacted away while it reconnected, say)
        // is retried by reading again: the loop looks for the older key afresh.
        await this.#retryOrThrow("campaign_watch", e, backoff, signal);
      }
    }
  }

  /**
   * After a failed step: rethrows when the campaign is over (aborted, or a failure that
   * retrying cannot fix); otherwise reports it and sleeps the backoff.
   */
  async #retryOrThrow(op: string, e: unknown, backoff: Backoff, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw signal.reason;
    const kind = classifyEtcdError(e);
    if (kind !== "unavailable" && kind !== "compacted") throw e;
    const delay = backoff.next();
    if (this.#o.health !== undefined) this.#o.health.failed(op, e, delay, { attempt: backoff.attempt });
    else this.#o.log.warn({ event: "etcd_error", op, kind, err: String(e), retryInMs: delay });
    await sleep(delay, signal);
  }

  #call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    return this.#o.health === undefined ? fn() : this.#o.health.call(op, fn);
  }

  /**
   * Stops everything this election runs (it does not revoke; call resign() for that) and
   * resolves once its reads still in flight have ended (each within its 2 s deadline).
   */
  async close(): Promise<void> {
    this.#keeper.close();
    await Promise.allSettled([...this.#polls]);
  }
}

/** How often a campaign waiting for its predecessor's key also reads it (see waitForDelete). */
const predecessorPollMs = 500;

/**
 * Resolves when `key` is deleted: seen by a watch from `fromRevision`, or by a read that
 * finds the key gone. The reads (one every 500 ms, at most 4 in flight: one sent to a member
 * without quorum fails only at its 2 s deadline) are there because a watch can sit on a
 * member cut off from the others and hear nothing: etcd cancels such a stream only after 3
 * election timeouts without a leader (see `withRequireLeader`), and until then the next
 * replica would not lead although the key is long gone. `polls` collects the reads in
 * flight, for the owner to wait for on close.
 */
async function waitForDelete(
  client: Etcd3,
  key: string,
  fromRevision: string,
  signal: AbortSignal,
  polls: Set<Promise<unknown>>,
): Promise<void> {
  let watcher: Watcher | undefined;
  let onAbort: (() => void) | undefined;
  let poller: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      let inFlight = 0;
      poller = setInterval(() => {
        if (inFlight >= 4) return;
        inFlight += 1;
        const poll: Promise<unknown> = client
          .get(key)
          .exec()
          .then(
            (res) => {
              if (res.kvs.length === 0) resolve();
            },
            () => undefined, // the watch, or the next read, will tell
          )
          .finally(() => {
            inFlight -= 1;
            polls.delete(poll);
          });
        polls.add(poll);
      }, predecessorPollMs);
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
          w.on("error", (e) => reject(new EtcdWatchCancelledError(e)));
        }, reject);
    });
  } finally {
    clearInterval(poller);
    if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
    await watcher?.cancel().catch(() => undefined);
  }
}
