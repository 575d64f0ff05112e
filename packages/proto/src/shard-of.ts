/**
 * Which shard an item belongs to: the one rule the SDK's `owns()`, the coordinator's data
 * source and every job must agree on.
 *
 * - An id of decimal digits (a `number`/`bigint` integer, or a string of digits) is
 *   `id % totalShards` (the classic `taskId % totalShards == shardId`).
 * - Any other string is hashed: 32-bit FNV-1a over its UTF-8 bytes, then `% totalShards`.
 *
 * Returns -1 when `totalShards` is 0 (no assignment yet).
 *
 * @example
 * ```ts
 * shardOf(42, 4);          // 2
 * shardOf("42", 4);        // 2
 * shardOf("order-7", 4);   // fnv1a("order-7") % 4
 * ```
 */
export function shardOf(id: number | bigint | string, totalShards: number): number {
  if (!Number.isInteger(totalShards) || totalShards <= 0) return -1;
  if (typeof id === "number") {
    if (!Number.isSafeInteger(id) || id < 0)
      throw new RangeError(`shardOf: ${id} is not a non-negative safe integer`);
    return id % totalShards;
  }
  if (typeof id === "bigint") {
    if (id < 0n) throw new RangeError(`shardOf: ${id} is negative`);
    return Number(id % BigInt(totalShards));
  }
  if (/^[0-9]{1,30}$/.test(id)) return Number(BigInt(id) % BigInt(totalShards));
  return fnv1a32(id) % totalShards;
}

/** 32-bit FNV-1a of the UTF-8 bytes of `s`, as an unsigned integer. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(s)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}
