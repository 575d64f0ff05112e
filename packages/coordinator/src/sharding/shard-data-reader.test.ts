import { shardOf } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { keyLayout } from "../store/keys.js";
import { bucketLabel, bucketOf, type DataLayout, gcd } from "./data-layout.js";
import {
  type DataReadStats,
  emptyDataReadStats,
  PageTooLargeError,
  type RangePage,
  readShardRecords,
} from "./shard-data-reader.js";

const keys = keyLayout("/t");
const group = "g";
const bucketPrefix = (label: string) => keys.dataBucketPrefix(group, label);

/**
 * The injected range interface over a sorted in-memory keyspace, with etcd's semantics
 * ([start, end), ascending bytes, `limit`, `more`) and, optionally, a receive limit.
 */
class MemoryRange {
  readonly entries: { key: Buffer; value: Buffer }[];
  readonly responses: number[] = [];
  constructor(
    entries: { key: Buffer; value: Buffer }[],
    readonly maxResponseBytes = Number.POSITIVE_INFINITY,
  ) {
    this.entries = [...entries].sort((a, b) => Buffer.compare(a.key, b.key));
  }
  range = async (start: Buffer, end: Buffer, limit: number): Promise<RangePage> => {
    await Promise.resolve();
    const inRange = this.entries.filter(
      (e) => Buffer.compare(e.key, start) >= 0 && Buffer.compare(e.key, end) < 0,
    );
    const kvs = inRange.slice(0, limit);
    const bytes = kvs.reduce((n, e) => n + e.key.length + e.value.length, 0);
    if (bytes > this.maxResponseBytes) throw new PageTooLargeError(`${bytes} > ${this.maxResponseBytes}`);
    this.responses.push(bytes);
    return { kvs, more: inRange.length > limit };
  };
}

function store(
  ids: readonly string[],
  buckets: number,
  value: (id: string) => Buffer = (id) => Buffer.from(`v-${id}`),
) {
  return ids.map((id) => ({
    key: Buffer.from(keys.dataRecord(group, bucketLabel(bucketOf(id, buckets), buckets), id)),
    value: value(id),
  }));
}

const bytes = (s: string) => Buffer.from(s, "utf8");
const byBytes = (a: string, b: string) => Buffer.compare(bytes(a), bytes(b));

/** The reference answer, computed without buckets. */
function expected(ids: readonly string[], shard: number, total: number, afterId: string): string[] {
  return ids
    .filter((id) => shardOf(id, total) === shard && (afterId === "" || byBytes(id, afterId) > 0))
    .sort(byBytes);
}

async function collect(
  range: MemoryRange,
  layout: DataLayout,
  shard: number,
  total: number,
  o: { afterId?: string; pageSize?: number; stats?: DataReadStats; take?: number; pageBytes?: number } = {},
): Promise<string[]> {
  const out: string[] = [];
  for await (const r of readShardRecords(range.range, bucketPrefix, layout, shard, total, {
    afterId: o.afterId ?? "",
    pageSize: o.pageSize ?? 100,
    signal: new AbortController().signal,
    stats: o.stats,
    pageBytes: o.pageBytes,
  })) {
    out.push(r.id);
    if (o.take !== undefined && out.length >= o.take) break;
  }
  return out;
}

// Ids as jobs use them: plain and zero-padded integers, long digit strings, arbitrary text
// (including characters whose UTF-16 order differs from their UTF-8 byte order).
const idArbitrary = fc.oneof(
  fc.nat({ max: 100_000 }).map(String),
  fc.nat({ max: 9_999 }).map((n) => String(n).padStart(5, "0")),
  fc.stringMatching(/^[0-9]{25,35}$/),
  fc.string({ minLength: 1, maxLength: 8, unit: "grapheme" }),
  fc.constantFrom("\uffff", "\u{1f600}", "a/b", "a\u0000b"),
);

const caseArbitrary = fc
  .record({
    ids: fc.uniqueArray(idArbitrary, { maxLength: 150 }),
    buckets: fc.integer({ min: 1, max: 48 }),
    total: fc.integer({ min: 1, max: 12 }),
    shardSeed: fc.nat(),
    pageSize: fc.integer({ min: 1, max: 12 }),
    after: fc.oneof(fc.constant(""), idArbitrary, fc.nat()),
  })
  .map((c) => ({
    ...c,
    shard: c.shardSeed % c.total,
    // An afterId that is "", an arbitrary string, or one of the stored ids.
    afterId: typeof c.after === "number" ? (c.ids[c.after % Math.max(1, c.ids.length)] ?? "") : c.after,
  }));

describe("readShardRecords", () => {
  it("yields exactly the shard's records, ascending bytewise, strictly after afterId", async () => {
    await fc.assert(
      fc.asyncProperty(caseArbitrary, async (c) => {
        const range = new MemoryRange(store(c.ids, c.buckets));
        const layout = { buckets: c.buckets, maxRecordBytes: 64 };
        const got = await collect(range, layout, c.shard, c.total, {
          afterId: c.afterId,
          pageSize: c.pageSize,
        });
        expect(got).toEqual(expected(c.ids, c.shard, c.total, c.afterId));
      }),
      { numRuns: 400 },
    );
  });

  it("fetches only the records of the buckets b ≡ s (mod gcd(B,T)): exactly the shard's when T divides B", async () => {
    await fc.assert(
      fc.asyncProperty(caseArbitrary, async (c) => {
        const range = new MemoryRange(store(c.ids, c.buckets));
        const stats = emptyDataReadStats();
        await collect(range, { buckets: c.buckets, maxRecordBytes: 64 }, c.shard, c.total, {
          afterId: c.afterId,
          pageSize: c.pageSize,
          stats,
        });
        const g = gcd(c.buckets, c.total);
        const visited = c.ids.filter(
          (id) =>
            bucketOf(id, c.buckets) % g === c.shard % g && (c.afterId === "" || byBytes(id, c.afterId) > 0),
        );
        expect(stats.recordsFetched).toBe(visited.length);
        if (c.buckets % c.total === 0)
          expect(stats.recordsFetched).toBe(expected(c.ids, c.shard, c.total, c.afterId).length);
      }),
      { numRuns: 300 },
    );
  });

  it("resumes from any record it yielded: the pieces add up to one read", async () => {
    await fc.assert(
      fc.asyncProperty(caseArbitrary, fc.integer({ min: 1, max: 20 }), async (c, step) => {
        const range = new MemoryRange(store(c.ids, c.buckets));
        const layout = { buckets: c.buckets, maxRecordBytes: 64 };
        const pieces: string[] = [];
        let afterId = "";
        // Bounded, so a cursor that repeats its afterId fails here instead of looping forever.
        for (let round = 0; round <= c.ids.length; round++) {
          const part = await collect(range, layout, c.shard, c.total, {
            afterId,
            pageSize: c.pageSize,
            take: step,
          });
          pieces.push(...part);
          const last = part.at(-1);
          if (part.length < step || last === undefined) break;
          afterId = last;
        }
        expect(pieces).toEqual(expected(c.ids, c.shard, c.total, ""));
      }),
      { numRuns: 150 },
    );
  });

  it("holds at most one page per bucket beyond what the consumer took (it is pulled)", async () => {
    const ids = Array.from({ length: 2000 }, (_, i) => String(i));
    const range = new MemoryRange(store(ids, 12));
    const stats = emptyDataReadStats();
    const gen = readShardRecords(range.range, bucketPrefix, { buckets: 12, maxRecordBytes: 16 }, 1, 4, {
      afterId: "",
      pageSize: 10,
      signal: new AbortController().signal,
      stats,
    });
    let taken = 0;
    for await (const _ of gen) {
      taken += 1;
      // 3 buckets (1, 5, 9) of 12 serve shard 1 of 4; each holds one page of 10 at most.
      expect(stats.recordsFetched - taken).toBeLessThanOrEqual(3 * 10);
      if (taken === 137) break;
    }
    const requests = stats.rangeRequests;
    await Promise.resolve();
    expect(stats.rangeRequests).toBe(requests); // nothing more is fetched after the consumer left
  });

  it("sizes pages from the layout's record size, so no response exceeds the byte budget", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.nat({ max: 5000 }).map(String), { minLength: 1, maxLength: 120 }),
        fc.integer({ min: 1, max: 3000 }),
        fc.integer({ min: 1, max: 16 }),
        async (ids, maxValue, buckets) => {
          const value = (id: string) => Buffer.alloc((Number(id) * 7919) % (maxValue + 1));
          const entries = store(ids, buckets, value);
          const maxRecordBytes = Math.max(...entries.map((e) => e.key.length + e.value.length));
          const pageBytes = 4096;
          const range = new MemoryRange(entries);
          const got = await collect(range, { buckets, maxRecordBytes }, 0, 2, { pageSize: 1000, pageBytes });
          expect(got).toEqual(expected(ids, 0, 2, ""));
          for (const b of range.responses) expect(b).toBeLessThanOrEqual(Math.max(pageBytes, maxRecordBytes));
        },
      ),
      { numRuns: 100 },
    );
  });

  it("shrinks and retries a page that came back too large (records bigger than the layout says)", async () => {
    const ids = Array.from({ length: 300 }, (_, i) => String(i).padStart(3, "0"));
    // 1 KiB values, but the layout claims 10-byte records; the client accepts 8 KiB responses.
    const range = new MemoryRange(
      store(ids, 4, () => Buffer.alloc(1024)),
      8 * 1024,
    );
    const stats = emptyDataReadStats();
    const got = await collect(range, { buckets: 4, maxRecordBytes: 10 }, 1, 2, { pageSize: 100, stats });
    expect(got).toEqual(expected(ids, 1, 2, ""));
    expect(stats.pagesShrunk).toBeGreaterThan(0);
    // Once shrunk, the read keeps the smaller page instead of failing again on every request.
    expect(stats.pagesShrunk).toBeLessThan(10);
  });

  it("fails when a single record is larger than the client accepts, and on an aborted signal", async () => {
    const range = new MemoryRange(
      store(["1", "2"], 1, () => Buffer.alloc(500)),
      100,
    );
    await expect(collect(range, { buckets: 1, maxRecordBytes: 0 }, 0, 1)).rejects.toBeInstanceOf(
      PageTooLargeError,
    );
    const ac = new AbortController();
    ac.abort();
    const gen = readShardRecords(
      new MemoryRange(store(["1"], 1)).range,
      bucketPrefix,
      { buckets: 1, maxRecordBytes: 0 },
      0,
      1,
      {
        afterId: "",
        pageSize: 10,
        signal: ac.signal,
      },
    );
    await expect(gen.next()).rejects.toThrow();
  });

  it("does not read other groups' records, nor the layout key", async () => {
    const mine = store(["1", "2", "3"], 1);
    const other = ["1", "9"].map((id) => ({
      key: Buffer.from(keyLayout("/t").dataRecord("g2", "0", id)),
      value: Buffer.from("x"),
    }));
    const layoutKey = { key: Buffer.from(keys.dataLayout(group)), value: Buffer.from("{}") };
    const range = new MemoryRange([...mine, ...other, layoutKey]);
    expect(await collect(range, { buckets: 1, maxRecordBytes: 8 }, 0, 1)).toEqual(["1", "2", "3"]);
  });
});
