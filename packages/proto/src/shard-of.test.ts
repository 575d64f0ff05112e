import { describe, expect, it } from "vitest";
import { fnv1a32, shardOf } from "./shard-of.js";

describe("shardOf", () => {
  it("is id % totalShards for integers, whatever their type", () => {
    for (const total of [1, 2, 3, 7, 16]) {
      for (let id = 0; id < 100; id++) {
        expect(shardOf(id, total)).toBe(id % total);
        expect(shardOf(String(id), total)).toBe(id % total);
        expect(shardOf(BigInt(id), total)).toBe(id % total);
      }
    }
  });
  it("handles integers beyond 2^53 exactly", () => {
    expect(shardOf("18446744073709551617", 10)).toBe(7);
  });
  it("hashes other strings with FNV-1a (published test vectors)", () => {
    expect(fnv1a32("")).toBe(0x811c9dc5);
    expect(fnv1a32("a")).toBe(0xe40c292c);
    expect(fnv1a32("foobar")).toBe(0xbf9cf968);
    expect(shardOf("foobar", 1000)).toBe(0xbf9cf968 % 1000);
  });
  it("returns -1 without shards and rejects negative ids", () => {
    expect(shardOf(5, 0)).toBe(-1);
    expect(() => shardOf(-1, 3)).toThrow(RangeError);
  });
});
