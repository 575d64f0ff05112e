import { shardOf } from "@org/proto";
import { z } from "zod";

// How the built-in data source lays a group's records out in etcd, and which part of that
// layout one shard's read must visit. Pure: the loader, the reader and the tests share it.
//
// A record with id `id` lives in bucket `shardOf(id, B)`, B fixed per group when its data is
// first loaded. shardOf is `h mod n` for one integer h per id (the id itself when it is a
// digit string, else its 32-bit FNV-1a hash), so `h mod B` fixes `h mod g` for every g that
// divides B. With g = gcd(B, T), shard s of T can only hold records of the buckets
// b ≡ s (mod g): a read visits B/g buckets, which hold N/g of the N records, and keeps the
// N/T whose shardOf(id, T) is s. When T divides B that is exactly the shard's records;
// otherwise the read fetches T/g times as many as it keeps.

/** The largest bucket count a layout may have (the largest sticky shard count). */
export const maxBuckets = 65_536;

/** `<dataNs>/<group>/layout`: how the group's records are laid out. */
export const dataLayoutSchema = z.object({
  /** B: a record lives in bucket `shardOf(id, buckets)`. Fixed once records exist. */
  buckets: z.number().int().min(1).max(maxBuckets),
  /**
   * The largest record (key plus value, in bytes) written through the loader: readers size
   * their pages from it so that no range response outgrows the etcd client's receive limit.
   */
  maxRecordBytes: z.number().int().nonnegative(),
});
export type DataLayout = z.infer<typeof dataLayoutSchema>;

/** Greatest common divisor of two positive integers. */
export function gcd(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return x;
}

/** The bucket of a record id: `shardOf(id, buckets)`. */
export function bucketOf(id: string, buckets: number): number {
  return shardOf(id, buckets);
}

/**
 * The bucket as it appears in keys: zero-padded to the width of `buckets - 1`, so that
 * `etcdctl get --prefix` lists buckets in numeric order.
 *
 * @example
 * ```ts
 * bucketLabel(7, 240); // "007"
 * ```
 */
export function bucketLabel(bucket: number, buckets: number): string {
  return String(bucket).padStart(String(buckets - 1).length, "0");
}

/**
 * The buckets whose records may belong to shard `shardId` of `totalShards`: those
 * b ≡ shardId (mod gcd(buckets, totalShards)), ascending.
 *
 * @example
 * ```ts
 * bucketsForShard(1, 4, 12); // [1, 5, 9]      (4 divides 12: exactly shard 1's records)
 * bucketsForShard(1, 8, 12); // [1, 5, 9]      (gcd 4: twice shard 1's records)
 * ```
 */
export function bucketsForShard(shardId: number, totalShards: number, buckets: number): number[] {
  if (!Number.isInteger(totalShards) || totalShards < 1 || shardId < 0 || shardId >= totalShards)
    throw new RangeError(`shard ${shardId} of ${totalShards} does not exist`);
  const g = gcd(buckets, totalShards);
  const out: number[] = [];
  for (let b = shardId % g; b < buckets; b += g) out.push(b);
  return out;
}

/**
 * How many records a read of one shard fetches per record it keeps: T / gcd(B, T); 1 when
 * T divides B.
 */
export function readFactor(totalShards: number, buckets: number): number {
  return totalShards / gcd(buckets, totalShards);
}

/**
 * Bucket counts offered to `modulo` groups, whose shard count T is the number of members and
 * changes with it. Each divides the next and each is highly composite, so many small T divide
 * it (720: every T up to 6 and 8, 9, 10, 12, 15, 16, 18, 20, 24, ...).
 */
export const moduloBucketChoices: readonly number[] = [1, 2, 4, 12, 48, 240, 720];

/**
 * Records per bucket below which a `modulo` group gets fewer buckets: a read visits one range
 * per bucket however few records it holds, so tiny datasets are not spread thin.
 */
export const minRecordsPerBucket = 32;

/**
 * The bucket count `data load` chooses when none is given: a `sticky` group's shard count
 * (T never changes, so every read is exact); for `modulo` (or no config), the largest of
 * {@link moduloBucketChoices} leaving at least {@link minRecordsPerBucket} records per bucket.
 *
 * @example
 * ```ts
 * defaultBuckets({ strategy: "sticky", shards: 64 }, 10_000); // 64
 * defaultBuckets({}, 200_000);                                 // 720
 * defaultBuckets({}, 10_000);                                  // 240
 * ```
 */
export function defaultBuckets(
  config: { readonly strategy?: string | undefined; readonly shards?: number | undefined },
  recordCount: number,
  defaultStickyShards = 16,
): number {
  if (config.strategy === "sticky") return Math.min(config.shards ?? defaultStickyShards, maxBuckets);
  const fit = Math.max(1, Math.floor(recordCount / minRecordsPerBucket));
  let best = 1;
  for (const b of moduloBucketChoices) if (b <= fit) best = b;
  return best;
}
