/**
 * Reconnect delays: "full jitter" exponential backoff (AWS Architecture Blog, "Exponential
 * Backoff And Jitter"): attempt n (from 0) waits a uniformly random time in
 * `[0, min(capMs, baseMs * 2^n))`. Full jitter spreads a crowd of workers that lost the
 * same leader, instead of having them all knock on the next one at the same instant.
 *
 * Pure: the random source is injected, so tests can pin it.
 */
export interface BackoffOptions {
  /** First ceiling, in ms. @default 50 */
  readonly baseMs: number;
  /** Largest ceiling, in ms. @default 500 */
  readonly capMs: number;
}

// The cap is kept well under a failover's slack (session timeout minus leader TTL, 2 s with
// the defaults): after a leader dies, a worker's next attempt comes at most this late.
export const defaultBackoff: BackoffOptions = { baseMs: 50, capMs: 500 };

/** The ceiling of attempt `n`: `min(capMs, baseMs * 2^n)`. */
export function backoffCeiling(attempt: number, o: BackoffOptions = defaultBackoff): number {
  const n = Number.isNaN(attempt) ? 0 : Math.max(0, Math.floor(attempt));
  // 2^31 already exceeds any sane cap; avoid Infinity for huge attempt counts.
  return Math.min(o.capMs, o.baseMs * 2 ** Math.min(n, 31));
}

/** The delay before attempt `n`: uniform in `[0, ceiling)`. */
export function backoffDelay(
  attempt: number,
  o: BackoffOptions = defaultBackoff,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffCeiling(attempt, o));
}
