import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type BackoffOptions, backoffCeiling, backoffDelay, defaultBackoff } from "./backoff.js";

/** Just below 1: the largest value a `Math.random`-like source may return. */
const almostOne = 1 - Number.EPSILON;

const options: fc.Arbitrary<BackoffOptions> = fc.record({
  baseMs: fc.integer({ min: 1, max: 10_000 }),
  capMs: fc.integer({ min: 1, max: 10_000_000 }),
});

describe("backoffCeiling", () => {
  it("defaults to base 50 ms and cap 500 ms", () => {
    expect(defaultBackoff).toEqual({ baseMs: 50, capMs: 500 });
    expect([0, 1, 2, 3, 4, 5, 6].map((n) => backoffCeiling(n))).toEqual([50, 100, 200, 400, 500, 500, 500]);
  });

  it("is min(cap, base * 2^n) (property)", () => {
    fc.assert(
      fc.property(options, fc.integer({ min: 0, max: 31 }), (o, n) => {
        expect(backoffCeiling(n, o)).toBe(Math.min(o.capMs, o.baseMs * 2 ** n));
      }),
      { numRuns: 500 },
    );
  });

  it("never exceeds the cap and never goes below min(base, cap) (property)", () => {
    fc.assert(
      fc.property(options, fc.integer({ min: 0, max: 10_000 }), (o, n) => {
        const c = backoffCeiling(n, o);
        expect(c).toBeLessThanOrEqual(o.capMs);
        expect(c).toBeGreaterThanOrEqual(Math.min(o.baseMs, o.capMs));
      }),
      { numRuns: 500 },
    );
  });

  it("is monotone non-decreasing in the attempt (property)", () => {
    fc.assert(
      fc.property(options, fc.integer({ min: -10, max: 2_000 }), (o, n) => {
        expect(backoffCeiling(n + 1, o)).toBeGreaterThanOrEqual(backoffCeiling(n, o));
      }),
      { numRuns: 500 },
    );
  });

  it("respects the cap for huge attempts: finite, never Infinity or NaN", () => {
    const o = { baseMs: 50, capMs: 1000 };
    for (const n of [32, 64, 1_000, 1_024, 1e6, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE, Infinity]) {
      const c = backoffCeiling(n, o);
      expect(Number.isFinite(c)).toBe(true);
      expect(c).toBe(1000);
      const d = backoffDelay(n, o, () => almostOne);
      expect(Number.isFinite(d)).toBe(true);
      expect(d).toBe(999);
    }
  });

  it("stays finite even with an infinite cap (the exponent is clamped)", () => {
    const o = { baseMs: 50, capMs: Number.POSITIVE_INFINITY };
    const c = backoffCeiling(1e9, o);
    expect(Number.isFinite(c)).toBe(true);
    expect(c).toBe(50 * 2 ** 31);
    expect(Number.isFinite(backoffDelay(1e9, o, () => almostOne))).toBe(true);
  });

  it("treats negative attempts as attempt 0", () => {
    const o = { baseMs: 50, capMs: 1000 };
    for (const n of [-1, -0.5, -3, -1e9, Number.NEGATIVE_INFINITY]) {
      expect(backoffCeiling(n, o)).toBe(50);
    }
  });

  it("rounds fractional attempts down", () => {
    const o = { baseMs: 50, capMs: 1000 };
    expect(backoffCeiling(0.99, o)).toBe(50);
    expect(backoffCeiling(1.5, o)).toBe(100);
    expect(backoffCeiling(2.999, o)).toBe(200);
    expect(backoffCeiling(3, o)).toBe(400);
  });

  it("fractional attempts give the ceiling of their floor (property)", () => {
    fc.assert(
      fc.property(
        options,
        fc.double({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true }),
        (o, attempt) => {
          expect(backoffCeiling(attempt, o)).toBe(backoffCeiling(Math.max(0, Math.floor(attempt)), o));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("backoffDelay", () => {
  it("random() = 0 gives 0", () => {
    for (let n = 0; n < 40; n++) expect(backoffDelay(n, defaultBackoff, () => 0)).toBe(0);
  });

  it("random() just below 1 gives ceiling - 1", () => {
    for (let n = 0; n < 40; n++) {
      expect(backoffDelay(n, defaultBackoff, () => almostOne)).toBe(backoffCeiling(n) - 1);
    }
    expect(backoffDelay(0, defaultBackoff, () => 0.999)).toBe(49);
    expect(backoffDelay(3, defaultBackoff, () => 0.999)).toBe(399);
    expect(backoffDelay(10, defaultBackoff, () => 0.999)).toBe(499);
  });

  it("is floor(random() * ceiling) for a pinned source", () => {
    expect(backoffDelay(0, defaultBackoff, () => 0.5)).toBe(25);
    expect(backoffDelay(3, defaultBackoff, () => 0.25)).toBe(100);
    expect(backoffDelay(9, defaultBackoff, () => 0.1234)).toBe(61);
  });

  it("calls the random source exactly once per delay", () => {
    let calls = 0;
    backoffDelay(3, defaultBackoff, () => {
      calls += 1;
      return 0.5;
    });
    expect(calls).toBe(1);
  });

  it("is an integer in [0, ceiling) for any source value in [0, 1) (property)", () => {
    fc.assert(
      fc.property(
        options,
        fc.integer({ min: -5, max: 100 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (o, n, r) => {
          const d = backoffDelay(n, o, () => r);
          const c = backoffCeiling(n, o);
          expect(Number.isInteger(d)).toBe(true);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThan(c);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("is non-decreasing in the random value for a fixed attempt (property)", () => {
    fc.assert(
      fc.property(
        options,
        fc.integer({ min: 0, max: 40 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (o, n, a, b) => {
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          expect(backoffDelay(n, o, () => lo)).toBeLessThanOrEqual(backoffDelay(n, o, () => hi));
        },
      ),
      { numRuns: 500 },
    );
  });

  it("stays in [0, ceiling) with the default Math.random", () => {
    for (let i = 0; i < 2_000; i++) {
      const n = i % 12;
      const d = backoffDelay(n);
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(backoffCeiling(n));
      expect(Number.isInteger(d)).toBe(true);
    }
  });
});

describe("backoff with a NaN attempt", () => {
  it("treats NaN as the first attempt instead of returning NaN", () => {
    expect(backoffCeiling(Number.NaN, { baseMs: 50, capMs: 1000 })).toBe(50);
    expect(Number.isNaN(backoffDelay(Number.NaN, { baseMs: 50, capMs: 1000 }, () => 0.5))).toBe(false);
  });
});
