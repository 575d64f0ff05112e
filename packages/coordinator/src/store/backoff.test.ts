import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Backoff, backoffDelayMs, sleep } from "./backoff.js";

describe("backoffDelayMs", () => {
  it("follows base * factor^attempt, capped, shortened by at most the jitter fraction", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 120_000 }),
        fc.double({ min: 1, max: 4, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        (attempt, baseMs, maxMs, factor, jitter, u) => {
          const d = backoffDelayMs(attempt, { baseMs, maxMs, factor, jitter }, () => u);
          const curve = Math.min(maxMs, baseMs * factor ** Math.min(attempt, 64));
          expect(Number.isFinite(d)).toBe(true);
          expect(d).toBeLessThanOrEqual(Math.round(curve));
          expect(d).toBeGreaterThanOrEqual(Math.floor(curve * (1 - jitter)));
        },
      ),
    );
  });

  it("never grows past the cap and never falls below (1 - jitter) of it once there", () => {
    const o = { baseMs: 1000, maxMs: 5000 };
    expect(backoffDelayMs(0, o, () => 0)).toBe(1000);
    expect(backoffDelayMs(1, o, () => 0)).toBe(2000);
    expect(backoffDelayMs(2, o, () => 0)).toBe(4000);
    expect(backoffDelayMs(3, o, () => 0)).toBe(5000);
    expect(backoffDelayMs(1e9, o, () => 0.999999)).toBe(4000);
  });

  it("is non-decreasing in the attempt for a fixed random draw", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100 }), fc.double({ min: 0, max: 1, noNaN: true }), (n, u) => {
        const o = { baseMs: 100, maxMs: 30_000 };
        expect(backoffDelayMs(n + 1, o, () => u)).toBeGreaterThanOrEqual(backoffDelayMs(n, o, () => u));
      }),
    );
  });
});

describe("Backoff", () => {
  it("counts attempts and starts over on reset", () => {
    const b = new Backoff({ baseMs: 10, maxMs: 1000, jitter: 0 });
    expect([b.next(), b.next(), b.next()]).toEqual([10, 20, 40]);
    expect(b.attempt).toBe(3);
    b.reset();
    expect(b.next()).toBe(10);
  });
});

describe("sleep", () => {
  it("resolves at once when the signal aborts, and immediately for an aborted signal", async () => {
    const c = new AbortController();
    const started = performance.now();
    const p = sleep(60_000, c.signal);
    c.abort();
    await p;
    await sleep(60_000, c.signal);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
