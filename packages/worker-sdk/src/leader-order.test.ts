import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LeaderOrder } from "./leader-order.js";

describe("LeaderOrder", () => {
  it("accepts anything first", () => {
    const o = new LeaderOrder();
    expect(o.admit(7, 3)).toBeUndefined();
    expect([o.epoch, o.version]).toEqual([7, 3]);
  });

  it("accepts the same or a higher version in the same epoch", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.admit(5, 3)).toBeUndefined();
    expect(o.admit(5, 4)).toBeUndefined();
    expect(o.version).toBe(4);
  });

  it("rejects a lower version in the same epoch, and remembers nothing of it", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.admit(5, 2)).toEqual({
      reason: "stale_version",
      epoch: 5,
      version: 2,
      seenEpoch: 5,
      actedVersion: 3,
    });
    expect([o.epoch, o.version]).toEqual([5, 3]);
  });

  it("rejects any message of a lower epoch, with or without a version", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.admit(4, 9)?.reason).toBe("stale_epoch");
    expect(o.admit(4)?.reason).toBe("stale_epoch");
    expect([o.epoch, o.version]).toEqual([5, 3]);
  });

  it("accepts a lower version from a higher epoch (a new leader's handoff), and orders versions from there", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.admit(6, 1)).toBeUndefined();
    expect([o.epoch, o.version]).toEqual([6, 1]);
    expect(o.admit(6, 2)).toBeUndefined();
    expect(o.admit(6, 1)?.reason).toBe("stale_version");
    // ... and the old epoch is over for good.
    expect(o.admit(5, 9)?.reason).toBe("stale_epoch");
  });

  it("a message naming no version only moves the epoch", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.admit(5)).toBeUndefined();
    expect(o.version).toBe(3);
    expect(o.admit(6)).toBeUndefined();
    expect([o.epoch, o.version]).toEqual([6, -1]);
  });

  it("check() never changes anything", () => {
    const o = new LeaderOrder();
    o.admit(5, 3);
    expect(o.check(6, 0)).toBeUndefined();
    expect([o.epoch, o.version]).toEqual([5, 3]);
  });

  it("admits exactly the messages in lexicographic (epoch, version) order (property)", () => {
    const msg = fc.record({
      epoch: fc.integer({ min: 0, max: 6 }),
      version: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(msg, { maxLength: 60 }), (msgs) => {
        const o = new LeaderOrder();
        // Model: the highest epoch seen, the highest version accepted within it.
        let epoch = 0;
        let version = -1;
        const accepted: { epoch: number; version: number | undefined }[] = [];
        for (const m of msgs) {
          const stale = o.admit(m.epoch, m.version);
          const expectStale =
            m.epoch < epoch || (m.epoch === epoch && m.version !== undefined && m.version < version);
          expect(stale !== undefined).toBe(expectStale);
          if (stale !== undefined) {
            expect(stale.reason).toBe(m.epoch < epoch ? "stale_epoch" : "stale_version");
            continue;
          }
          if (m.epoch > epoch) {
            epoch = m.epoch;
            version = -1;
          }
          if (m.version !== undefined && m.version > version) version = m.version;
          accepted.push(m);
          expect([o.epoch, o.version]).toEqual([epoch, version]);
        }
        // What was accepted never goes back: epochs never decrease, and within an epoch
        // neither do the versions named.
        for (let i = 1; i < accepted.length; i++) {
          const a = accepted[i - 1];
          const b = accepted[i];
          if (a === undefined || b === undefined) continue;
          expect(b.epoch).toBeGreaterThanOrEqual(a.epoch);
        }
        const byEpoch = new Map<number, number>();
        for (const a of accepted) {
          if (a.version === undefined) continue;
          const max = byEpoch.get(a.epoch) ?? -1;
          expect(a.version).toBeGreaterThanOrEqual(max);
          byEpoch.set(a.epoch, a.version);
        }
      }),
      { numRuns: 500 },
    );
  });
});
