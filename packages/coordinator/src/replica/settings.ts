import type { StrategyName } from "../sharding/assignment.js";
import type { ClusterSettings } from "../store/records.js";

/** The cluster settings as the leader applies them at one instant. */
export interface EffectiveSettings {
  /** Announced to workers (Welcome, acks); their self-fence follows it. */
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  /** Default strategy and shard count of groups without a config of their own. */
  readonly strategy: StrategyName;
  readonly shards: number;
  /** A member silent this long is expelled. */
  readonly expiryMs: number;
  /** The longest session timeout any worker may still hold: fences are computed with it. */
  readonly fenceMs: number;
}

/**
 * Applies cluster settings changes safely (pure; the caller passes monotonic time).
 *
 * Workers learn the session timeout from Welcome and from every ack. After a *decrease*, a
 * worker that has not yet heard an ack still fences at the old, longer timeout, so for one
 * old session timeout after the change the leader keeps expelling and computing fences with
 * the old value; after that every worker either heard the new one or has fenced itself. An
 * increase is safe at once for expiry (the leader waits longer than workers do), but fences
 * use the longer value from the start.
 */
export class SettingsTracker {
  #current: ClusterSettings;
  #previousSessionTimeoutMs: number;
  #settledAt: number;
  /** The settings once settled, kept: they are read on every heartbeat ack. */
  #settled: EffectiveSettings | undefined;

  /**
   * `takeoverAt`: when this leadership began. A new leader does not know when its predecessor
   * announced the current value, so a recorded previous value counts for one (longest)
   * session timeout from its takeover.
   */
  constructor(initial: ClusterSettings, takeoverAt: number) {
    this.#current = initial;
    this.#previousSessionTimeoutMs = initial.previous?.sessionTimeoutMs ?? initial.sessionTimeoutMs;
    this.#settledAt = takeoverAt + Math.max(this.#previousSessionTimeoutMs, initial.sessionTimeoutMs);
  }

  get current(): ClusterSettings {
    return this.#current;
  }

  /** A new record was read (the watch, or `config set`). */
  update(next: ClusterSettings, now: number): void {
    const before = this.effective(now);
    this.#previousSessionTimeoutMs = Math.max(before.fenceMs, this.#current.sessionTimeoutMs);
    this.#settledAt = now + this.#previousSessionTimeoutMs;
    this.#current = next;
    this.#settled = undefined;
  }

  effective(now: number): EffectiveSettings {
    if (this.#settled !== undefined) return this.#settled;
    const c = this.#current;
    const settling = now < this.#settledAt;
    const longest = settling
      ? Math.max(c.sessionTimeoutMs, this.#previousSessionTimeoutMs)
      : c.sessionTimeoutMs;
    const e: EffectiveSettings = {
      sessionTimeoutMs: c.sessionTimeoutMs,
      heartbeatIntervalMs: c.heartbeatIntervalMs,
      strategy: c.strategy,
      shards: c.shards,
      expiryMs: longest,
      fenceMs: longest,
    };
    if (!settling) this.#settled = e;
    return e;
  }
}
