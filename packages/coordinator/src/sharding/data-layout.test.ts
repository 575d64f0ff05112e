import { shardOf } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  bucketLabel,
  bucketOf,
  bucketsForShard,
  defaultBuckets,
  gcd,
  maxBuckets,
  moduloBucketChoices,
  readFactor,
} from "./data-layout.js";

// Ids as jobs use them: plain and zero-padded integers, long digit strings, arbitrary text.
const idArbitrary = fc.oneof(
  fc.nat({ max: 1_000_000 }).map(String),
  fc.nat({ max: 99_999 }).map((n) => String(n).padStart(6, "0")),
  fc.stringMatching(/^[0-9]{25,40}$/),
  fc.string({ minLength: 1, maxLength: 12, unit: "grapheme" }),
);

describe("bucketsForShard", () => {
  it("lists the buckets that can hold a record of the shard: b ≡ s (mod gcd(B,T))", () => {
    fc.assert(
      fc.property(
        idArbitrary,
        fc.integer({ min: 1, max: 800 }),
        fc.integer({ min: 1, max: 64 }),
        (id, buckets, total) => {
          const shard = shardOf(id, total);
          const b = bucketOf(id, buckets);
          // The record's bucket is among its shard's buckets, and among another shard's only
          // when that shard shares the residue mod gcd(B, T) (then the read filters it out).
          const g = gcd(buckets, total);
          for (let s = 0; s < total; s++)
            expect(bucketsForShard(s, total, buckets).includes(b)).toBe(s % g === shard % g);
          expect(bucketsForShard(shard, total, buckets)).toContain(b);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("visits B/gcd(B,T) buckets, partitioning the buckets among the shards sharing them", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 1, max: 100 }), (buckets, total) => {
        const g = gcd(buckets, total);
        const seen = new Map<number, number>();
        // Plain checks in the loop, one expect per property at the end: expect() itself is
        // the slow part at these sizes (up to 100 lists of 2,000 buckets per run).
        let lengthsOk = true;
        let ascending = true;
        for (let s = 0; s < total; s++) {
          const list = bucketsForShard(s, total, buckets);
          if (list.length !== buckets / g) lengthsOk = false;
          for (let i = 1; i < list.length; i++) if ((list[i] ?? 0) <= (list[i - 1] ?? 0)) ascending = false;
          for (const b of list) seen.set(b, (seen.get(b) ?? 0) + 1);
        }
        expect(lengthsOk).toBe(true);
        expect(ascending).toBe(true);
        // Every bucket is read by exactly T/g shards: the read factor.
        expect(seen.size).toBe(buckets);
        const factor = readFactor(total, buckets);
        expect([...seen.values()].every((n) => n === factor)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("is exact when T divides B and refuses shards that do not exist", () => {
    expect(bucketsForShard(1, 4, 12)).toEqual([1, 5, 9]);
    expect(readFactor(4, 12)).toBe(1);
    expect(bucketsForShard(1, 8, 12)).toEqual([1, 5, 9]);
    expect(readFactor(8, 12)).toBe(2);
    expect(bucketsForShard(0, 7, 720)).toHaveLength(720);
    expect(() => bucketsForShard(4, 4, 12)).toThrow(RangeError);
    expect(() => bucketsForShard(0, 0, 12)).toThrow(RangeError);
  });
});

describe("bucketLabel", () => {
  it("zero-pads to the width of the largest bucket, so labels sort numerically", () => {
    expect(bucketLabel(7, 240)).toBe("007");
    expect(bucketLabel(0, 1)).toBe("0");
    expect(bucketLabel(9, 10)).toBe("9");
    expect(bucketLabel(9, 11)).toBe("09");
    fc.assert(
      fc.property(fc.integer({ min: 2, max: maxBuckets }), fc.nat(), fc.nat(), (buckets, x, y) => {
        const a = x % buckets;
        const b = y % buckets;
        expect(bucketLabel(a, buckets).length).toBe(String(buckets - 1).length);
        const [la, lb] = [bucketLabel(a, buckets), bucketLabel(b, buckets)];
        expect(la < lb).toBe(a < b);
      }),
    );
  });
});

describe("defaultBuckets", () => {
  it("uses a sticky group's shard count, and for modulo the largest choice keeping 32 records per bucket", () => {
    expect(defaultBuckets({ strategy: "sticky", shards: 64 }, 10)).toBe(64);
    expect(defaultBuckets({ strategy: "sticky" }, 10)).toBe(16);
    expect(defaultBuckets({}, 200_000)).toBe(720);
    expect(defaultBuckets({ strategy: "modulo" }, 10_000)).toBe(240);
    expect(defaultBuckets({}, 600)).toBe(12);
    expect(defaultBuckets({}, 200)).toBe(4);
    expect(defaultBuckets({}, 0)).toBe(1);
  });

  it("offers modulo groups a divisor chain, each divisible by every small shard count it should", () => {
    for (let i = 1; i < moduloBucketChoices.length; i++)
      expect((moduloBucketChoices[i] as number) % (moduloBucketChoices[i - 1] as number)).toBe(0);
    for (const t of [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 16]) expect(720 % t).toBe(0);
  });
});
