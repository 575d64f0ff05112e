/**
 * Fence arithmetic for a lease we keep alive (pure; times are `performance.now()` ms).
 *
 * etcd extends a lease to `TTL` from the moment it *processes* a keep-alive, which is after
 * we sent it. So the lease is certainly alive until `sentAt + ttl` of the latest
 * acknowledged keep-alive, and may be dead any time after. We treat ourselves as holding
 * the lease only until that instant less a margin for clock-rate drift and scheduling
 * delay; then we must stop acting on it (step down), whatever etcd may still think.
 */
export class LeaseFence {
  readonly #marginMs: number;
  #validUntil = Number.NEGATIVE_INFINITY;

  constructor(marginMs: number) {
    this.#marginMs = marginMs;
  }

  /** The safety margin for a TTL: a sixth of it, at least 250 ms, at most 2 s. */
  static marginFor(ttlSec: number): number {
    return Math.min(2000, Math.max(250, (ttlSec * 1000) / 6));
  }

  /** Records that etcd confirmed the lease with `ttlSec` left for a request sent at `sentAt`. */
  confirm(sentAt: number, ttlSec: number): void {
    if (ttlSec <= 0) {
      this.#validUntil = Number.NEGATIVE_INFINITY;
      return;
    }
    this.#validUntil = Math.max(this.#validUntil, sentAt + ttlSec * 1000);
  }

  /** Marks the lease as gone (etcd answered TTL 0, or we revoked it). */
  invalidate(): void {
    this.#validUntil = Number.NEGATIVE_INFINITY;
  }

  /** Milliseconds left before we must stop acting on the lease (<= 0: now). */
  remainingMs(now: number): number {
    return this.#validUntil - this.#marginMs - now;
  }

  /** Whether we may still act on the lease at `now`. */
  holds(now: number): boolean {
    return this.remainingMs(now) > 0;
  }
}
