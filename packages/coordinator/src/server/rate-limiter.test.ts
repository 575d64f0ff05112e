import { describe, expect, it } from "vitest";
import { TokenBucket } from "./rate-limiter.js";

describe("TokenBucket", () => {
  it("allows a burst, then the sustained rate, and refuses a flood", () => {
    const b = new TokenBucket(3, 2, 0);
    expect([b.take(0), b.take(0), b.take(0), b.take(0)]).toEqual([true, true, true, false]);
    expect(b.take(499)).toBe(false);
    expect(b.take(500)).toBe(true); // 2 per second: one token per 500 ms
    expect(b.take(10_000)).toBe(true);
    let granted = 0;
    for (let i = 0; i < 100; i++) if (b.take(10_000)) granted++;
    expect(granted).toBe(2); // refilled to the burst (3), one already taken
  });
});
