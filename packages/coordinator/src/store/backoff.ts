/** Shape of an exponential backoff (see {@link backoffDelayMs}). */
export interface BackoffOptions {
  /** Delay before the first retry, in ms (before jitter). */
  readonly baseMs: number;
  /** Cap of the exponential curve, in ms (before jitter). */
  readonly maxMs: number;
  /** Growth per retry. @default 2 */
  readonly factor?: number;
  /** Fraction of the delay that is random, in [0, 1]. @default 0.2 */
  readonly jitter?: number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry), in ms. Pure:
 *
 * ```
 * delay = min(maxMs, baseMs * factor^attempt) * (1 - jitter * u),   u uniform in [0, 1)
 * ```
 *
 * The jitter only ever shortens the curve, and by at most `jitter` of it: replicas that
 * failed together spread out, yet a loop that logs once per retry keeps a steady pace (at
 * the cap, at most one line every `(1 - jitter) * maxMs`). Full jitter (AWS's
 * "exponential backoff and jitter") spreads load better but can retry at once, which is
 * what a log line per failure must not do.
 *
 * @example
 * ```ts
 * backoffDelayMs(0, { baseMs: 1000, maxMs: 5000 }); // 800..1000
 * backoffDelayMs(5, { baseMs: 1000, maxMs: 5000 }); // 4000..5000
 * ```
 */
export function backoffDelayMs(
  attempt: number,
  options: BackoffOptions,
  random: () => number = Math.random,
): number {
  const factor = options.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.2));
  // Exponent capped so that factor^n never overflows to Infinity (or NaN with factor 1).
  const n = Math.min(Math.max(0, Math.floor(attempt)), 64);
  const curve = Math.min(options.maxMs, options.baseMs * factor ** n);
  const u = Math.min(Math.max(random(), 0), 1);
  return Math.max(0, Math.round(curve * (1 - jitter * u)));
}

/**
 * A retry counter over {@link backoffDelayMs}: `next()` gives the delay before the next
 * attempt and counts it; `reset()` after a success.
 *
 * @example
 * ```ts
 * const backoff = new Backoff({ baseMs: 1000, maxMs: 5000 });
 * for (;;) {
 *   try { await work(); backoff.reset(); break; }
 *   catch { await sleep(backoff.next()); }
 * }
 * ```
 */
export class Backoff {
  readonly #options: BackoffOptions;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions, random: () => number = Math.random) {
    this.#options = options;
    this.#random = random;
  }

  /** Retries counted since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }

  next(): number {
    const d = backoffDelayMs(this.#attempt, this.#options, this.#random);
    this.#attempt += 1;
    return d;
  }

  reset(): void {
    this.#attempt = 0;
  }
}

/**
 * Resolves after `ms`, or as soon as `signal` aborts (never rejects); leaves no timer or
 * listener behind. The wait between retries of every loop that uses {@link Backoff}.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
