/**
 * The rebalance debounce (pure; the caller passes the time and runs the timer).
 *
 * A membership change starts a quiet period of `delayMs`; each further change restarts it,
 * so a burst of joins or a rolling restart yields one version, not ten. Without a bound,
 * continuous churn (a crash-looping worker) would restart it forever and leave an expelled
 * member's shards unowned indefinitely; so the version is also due `maxDelayMs` after the
 * first change of the burst, however many follow.
 */
export class Debounce {
  readonly #delayMs: number;
  readonly #maxDelayMs: number;
  #firstAt: number | undefined;
  #dueAt: number | undefined;
  #reasons: string[] = [];

  constructor(delayMs: number, maxDelayMs: number) {
    if (!(delayMs >= 0) || !(maxDelayMs >= delayMs))
      throw new RangeError(`debounce needs 0 <= delay (${delayMs}) <= max delay (${maxDelayMs})`);
    this.#delayMs = delayMs;
    this.#maxDelayMs = maxDelayMs;
  }

  /** Records a change at `now`; returns when the version is due. */
  change(now: number, reason: string): number {
    this.#firstAt ??= now;
    if (!this.#reasons.includes(reason)) this.#reasons.push(reason);
    this.#dueAt = Math.min(now + this.#delayMs, this.#firstAt + this.#maxDelayMs);
    return this.#dueAt;
  }

  /** When the pending burst is due, or undefined when nothing is pending. */
  get dueAt(): number | undefined {
    return this.#dueAt;
  }

  /** Whether a burst is due at `now`. */
  isDue(now: number): boolean {
    return this.#dueAt !== undefined && now >= this.#dueAt;
  }

  /** Takes the pending burst (its reasons) and starts afresh. */
  take(): string[] {
    const reasons = this.#reasons;
    this.#firstAt = undefined;
    this.#dueAt = undefined;
    this.#reasons = [];
    return reasons;
  }
}
