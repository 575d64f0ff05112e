import { create } from "@bufbuild/protobuf";
import { ShardDataLocationSchema } from "@org/proto";
import { describe, expect, it } from "vitest";
import { parseShardLocation, ShardLocations } from "./shard-location.js";

const descriptor = {
  version: 1,
  kind: "postgres",
  host: "db",
  port: 5432,
  database: "app",
  urlEnv: null,
  ssl: false,
  table: '"public"."items"',
  idColumn: "id",
  payloadColumn: "payload",
  keyColumn: "shard_hash",
  shard: 2,
  totalShards: 4,
  predicate: "(shard_hash % 4) = 2",
  query: "SELECT ...",
};
const loc = (d: unknown, shardId = 2, kind = "postgres") =>
  create(ShardDataLocationSchema, { shardId, kind, descriptorJson: JSON.stringify(d) });

describe("parseShardLocation", () => {
  it("reads a version-1 PostgreSQL descriptor", () => {
    expect(parseShardLocation(loc(descriptor))).toEqual(descriptor);
  });

  it("ignores unknown kinds and versions, malformed JSON, and a shard that does not match", () => {
    expect(parseShardLocation(loc(descriptor, 2, "s3"))).toBeUndefined();
    expect(parseShardLocation(loc({ ...descriptor, version: 2 }))).toBeUndefined();
    expect(parseShardLocation(loc({ ...descriptor, port: "5432" }))).toBeUndefined();
    expect(parseShardLocation(loc(descriptor, 3))).toBeUndefined();
    expect(
      parseShardLocation(
        create(ShardDataLocationSchema, { shardId: 2, kind: "postgres", descriptorJson: "{" }),
      ),
    ).toBeUndefined();
  });

  it("keeps the latest set, by shard", () => {
    const all = new ShardLocations();
    all.update([loc(descriptor), loc({ ...descriptor, shard: 0 }, 0)]);
    expect(all.get(2)?.predicate).toBe("(shard_hash % 4) = 2");
    expect(all.get({ id: 0 })?.shard).toBe(0);
    all.update([]);
    expect(all.get(2)).toBeUndefined();
  });
});
