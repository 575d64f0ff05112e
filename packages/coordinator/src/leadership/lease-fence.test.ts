import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LeaseFence } from "./lease-fence.js";

describe("LeaseFence", () => {
  it("holds until sentAt + TTL - margin of the latest confirmation, not its arrival", () => {
    const f = new LeaseFence(500);
    expect(f.holds(0)).toBe(false);
    f.confirm(1000, 3); // sent at 1000 ms, TTL 3 s
    expect(f.holds(3499)).toBe(true);
    expect(f.holds(3500)).toBe(false);
    f.confirm(2000, 3);
    expect(f.remainingMs(2000)).toBe(2500);
  });

  it("an older confirmation arriving late never moves the deadline back", () => {
    const f = new LeaseFence(0);
    f.confirm(5000, 3);
    f.confirm(1000, 3);
    expect(f.remainingMs(0)).toBe(8000);
  });

  it("TTL 0 (lease gone) and invalidate() end it at once", () => {
    const f = new LeaseFence(0);
    f.confirm(0, 3);
    f.confirm(10, 0);
    expect(f.holds(11)).toBe(false);
    f.confirm(20, 3);
    f.invalidate();
    expect(f.holds(21)).toBe(false);
  });

  it("margin is a sixth of the TTL within [250 ms, 2 s]", () => {
    expect(LeaseFence.marginFor(1)).toBe(250);
    expect(LeaseFence.marginFor(3)).toBe(500);
    expect(LeaseFence.marginFor(60)).toBe(2000);
  });

  it("never holds past the true expiry of any confirmed keep-alive (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(100_000), fc.integer({ min: 0, max: 10 })), { maxLength: 30 }),
        fc.nat(200_000),
        (acks, now) => {
          const f = new LeaseFence(250);
          for (const [sentAt, ttl] of acks) f.confirm(sentAt, ttl);
          // etcd's lease certainly expired by max over confirmations of (sentAt + ttl), ignoring TTL-0 resets.
          if (f.holds(now)) {
            const latest = Math.max(...acks.filter(([, t]) => t > 0).map(([s, t]) => s + t * 1000));
            expect(now).toBeLessThan(latest - 250);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
