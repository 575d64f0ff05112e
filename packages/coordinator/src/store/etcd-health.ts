import type { Logger } from "pino";
import { sleep } from "./backoff.js";
import { classifyEtcdError, describeEtcdError, type EtcdErrorKind } from "./etcd-errors.js";

/** Where etcd call outcomes are counted (the replica's Prometheus metrics implement it). */
export interface EtcdMetricsSink {
  /** One failed etcd call of operation `op`. */
  etcdError(op: string, kind: EtcdErrorKind): void;
  /** Duration of one etcd call of operation `op`, failed or not. */
  etcdDuration(op: string, seconds: number): void;
}

/**
 * Whether this replica can talk to etcd: `connecting` until the first answer, `connected`
 * after any answer (a refusal such as NOSPACE is an answer), `unreachable` after a call
 * failed for lack of one (no connection, deadline, no etcd leader) or for our credentials.
 */
export type EtcdConnectionState = "connecting" | "connected" | "unreachable";

/** What `/status` shows about etcd. */
export interface EtcdHealthSnapshot {
  readonly state: EtcdConnectionState;
  /** ISO time the state was entered. */
  readonly since: string;
  readonly endpoints: readonly string[];
  readonly lastError: {
    readonly op: string;
    readonly kind: EtcdErrorKind;
    readonly message: string;
    readonly at: string;
  } | null;
  /** ISO time of the next retry announced after the last failure, if it is still ahead. */
  readonly nextRetryAt: string | null;
}

/**
 * The replica's view of its etcd connection, fed by every loop that talks to etcd: calls
 * are timed and counted through {@link EtcdHealth.call}, and a loop that will retry a
 * failure reports it once with {@link EtcdHealth.failed}, which writes the one log line per
 * failure (`etcd_error`, with the kind and the delay before the next retry). State changes
 * log `etcd_connected` / `etcd_unreachable` once each.
 *
 * @example
 * ```ts
 * const health = new EtcdHealth(endpoints, log, metrics);
 * try { await health.call("leader_read", () => client.get(key)); }
 * catch (e) { health.failed("leader_read", e, 1000); await sleep(1000); }
 * ```
 */
export class EtcdHealth {
  readonly #endpoints: readonly string[];
  readonly #log: Logger;
  readonly #metrics: EtcdMetricsSink | undefined;
  readonly #now: () => number;
  // Errors already counted by call(), so failed() does not count them twice.
  readonly #counted = new WeakSet<object>();
  readonly #onConnected = new Set<() => void>();
  readonly #onState = new Set<(state: EtcdConnectionState) => void>();
  #state: EtcdConnectionState = "connecting";
  #since: number;
  #lastError: { op: string; kind: EtcdErrorKind; message: string; at: number } | undefined;
  #nextRetryAt: number | undefined;

  constructor(
    endpoints: readonly string[],
    log: Logger,
    metrics?: EtcdMetricsSink,
    now: () => number = Date.now,
  ) {
    this.#endpoints = endpoints;
    this.#log = log;
    this.#metrics = metrics;
    this.#now = now;
    this.#since = now();
  }

  get state(): EtcdConnectionState {
    return this.#state;
  }

  /** Runs one etcd call: times it, counts a failure by kind, marks etcd answering on success. */
  async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const v = await fn();
      this.#metrics?.etcdDuration(op, (performance.now() - started) / 1000);
      this.ok();
      return v;
    } catch (e) {
      this.#metrics?.etcdDuration(op, (performance.now() - started) / 1000);
      this.#count(op, e);
      throw e;
    }
  }

  /** etcd answered (a call or a keep-alive): the connection works. */
  ok(): void {
    if (this.#state === "connected") return;
    const was = this.#state;
    this.#enter("connected");
    this.#nextRetryAt = undefined;
    this.#log.info({ event: "etcd_connected", endpoints: this.#endpoints, was });
    for (const fn of [...this.#onConnected]) fn();
  }

  /**
   * Calls `fn` each time etcd answers again after a failure (or for the first time). Retry
   * loops sleeping in a backoff use it to retry at once instead of at their next turn (see
   * {@link EtcdHealth.sleep}). Returns the unsubscribe function.
   */
  onConnected(fn: () => void): () => void {
    this.#onConnected.add(fn);
    return () => this.#onConnected.delete(fn);
  }

  /**
   * Calls `fn` with the new state at each change of {@link EtcdHealth.state} (the gRPC
   * health service follows it). Returns the unsubscribe function.
   */
  onStateChange(fn: (state: EtcdConnectionState) => void): () => void {
    this.#onState.add(fn);
    return () => this.#onState.delete(fn);
  }

  /**
   * Sleeps `ms` before a retry, or less: it ends as soon as `signal` aborts or etcd is seen
   * answering again. Never rejects; leaves no timer or listener behind.
   */
  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    const woken = new AbortController();
    const off = this.onConnected(() => woken.abort());
    try {
      await sleep(ms, AbortSignal.any([signal, woken.signal]));
    } finally {
      off();
    }
  }

  /**
   * Reports a failure the caller will retry after `retryInMs` (undefined: it will not
   * retry by itself). Logs one line and returns the kind.
   */
  failed(
    op: string,
    err: unknown,
    retryInMs: number | undefined,
    extra?: Record<string, unknown>,
  ): EtcdErrorKind {
    const kind = classifyEtcdError(err);
    this.#count(op, err, kind);
    const at = this.#now();
    const message = describeEtcdError(err);
    this.#lastError = { op, kind, message, at };
    this.#nextRetryAt = retryInMs === undefined ? undefined : at + retryInMs;
    if ((kind === "unavailable" || kind === "auth") && this.#state !== "unreachable") {
      this.#enter("unreachable");
      this.#log.warn({ event: "etcd_unreachable", endpoints: this.#endpoints, kind, err: message });
    }
    const level = kind === "nospace" || kind === "auth" ? "error" : "warn";
    this.#log[level]({ event: "etcd_error", op, kind, err: message, retryInMs: retryInMs ?? null, ...extra });
    return kind;
  }

  snapshot(): EtcdHealthSnapshot {
    const e = this.#lastError;
    const next = this.#nextRetryAt;
    return {
      state: this.#state,
      since: new Date(this.#since).toISOString(),
      endpoints: this.#endpoints,
      lastError:
        e === undefined
          ? null
          : { op: e.op, kind: e.kind, message: e.message, at: new Date(e.at).toISOString() },
      nextRetryAt: next !== undefined && next > this.#now() ? new Date(next).toISOString() : null,
    };
  }

  /** Why the replica is not ready (for `/readyz`), or undefined while etcd answers. */
  notReadyReason(): string | undefined {
    if (this.#state === "connected") return undefined;
    const e = this.#lastError;
    if (e === undefined) return `etcd not reached yet (${this.#endpoints.join(",")})`;
    return `etcd unreachable at ${this.#endpoints.join(",")}: ${e.kind}: ${e.message}`;
  }

  #enter(state: EtcdConnectionState): void {
    this.#state = state;
    this.#since = this.#now();
    for (const fn of [...this.#onState]) fn(state);
  }

  #count(op: string, err: unknown, kind: EtcdErrorKind = classifyEtcdError(err)): void {
    // A wrapper (CoordinatorError) of an error call() already counted is the same failure.
    for (let cur: unknown = err, depth = 0; cur instanceof Error && depth < 8; cur = cur.cause, depth++) {
      if (this.#counted.has(cur)) return;
    }
    if (typeof err === "object" && err !== null) this.#counted.add(err);
    this.#metrics?.etcdError(op, kind);
  }
}
