import { describe, expect, it } from "vitest";
import { parseDataSourceConfig } from "./data-source-config.js";
import { readPageSql, shardIndexName, shardPredicate } from "./postgres-sql.js";
import { shardLocation, shardLocations } from "./shard-location.js";

const pgConfig = {
  dataSource: { kind: "postgres", table: "billing.items", host: "db", port: 6432, passwordEnv: "PG_PW" },
};

describe("shardLocation", () => {
  it("describes a PostgreSQL shard: table, predicate, the index-friendly keyset query, no credentials", () => {
    const loc = shardLocation(pgConfig, 3, 8);
    expect(loc?.shardId).toBe(3);
    expect(loc?.kind).toBe("postgres");
    const d = JSON.parse(loc?.descriptorJson ?? "{}");
    expect(d).toEqual({
      version: 1,
      kind: "postgres",
      host: "db",
      port: 6432,
      database: "postgres",
      urlEnv: null,
      ssl: false,
      table: '"billing"."items"',
      idColumn: "id",
      payloadColumn: "payload",
      keyColumn: "shard_hash",
      shard: 3,
      totalShards: 8,
      predicate: "(shard_hash % 8) = 3",
      query:
        'SELECT id, payload FROM "billing"."items" WHERE ((shard_hash % 8), id) > (3, $1) AND (shard_hash % 8) <= 3 ORDER BY (shard_hash % 8), id LIMIT $2',
    });
    expect(loc?.descriptorJson).not.toMatch(/PG_PW|password/i);
  });

  it("gives none for the etcd source, an invalid config, or a shard that does not exist", () => {
    expect(shardLocation(undefined, 0, 4)).toBeUndefined();
    expect(shardLocation({}, 0, 4)).toBeUndefined();
    expect(shardLocation({ dataSource: { kind: "etcd" } }, 0, 4)).toBeUndefined();
    expect(shardLocation({ dataSource: { kind: "postgres" } }, 0, 4)).toBeUndefined();
    expect(shardLocation({ dataSource: { kind: "postgres", table: "x; drop" } }, 0, 4)).toBeUndefined();
    expect(shardLocation(pgConfig, 4, 4)).toBeUndefined();
    expect(shardLocations(pgConfig, [0, 2, 9], 4).map((l) => l.shardId)).toEqual([0, 2]);
  });

  it("names no host when the replicas connect through a URL variable", () => {
    const d = JSON.parse(
      shardLocation({ dataSource: { kind: "postgres", table: "t", urlEnv: "PG_URL" } }, 0, 2)
        ?.descriptorJson ?? "",
    );
    expect(d).toMatchObject({ host: null, port: null, database: null, urlEnv: "PG_URL" });
  });
});

describe("data source config", () => {
  it("refuses secrets in clear and malformed identifiers, with the group named", () => {
    expect(() => parseDataSourceConfig("g", { kind: "postgres", table: "t", password: "x" })).toThrow(
      /group g: dataSource.password would keep a secret in etcd in clear/,
    );
    expect(() => parseDataSourceConfig("g", { kind: "postgres", table: "a.b.c" })).toThrow(
      /dataSource.table/,
    );
    expect(() => parseDataSourceConfig("g", { kind: "mysql" })).toThrow(/group g: dataSource/);
    expect(() => parseDataSourceConfig("g", { kind: "postgres", table: "t", extra: 1 })).toThrow();
    expect(parseDataSourceConfig("g", undefined)).toEqual({ kind: "etcd" });
  });
});

describe("postgres SQL", () => {
  it("keeps index names within 63 bytes and builds the plain and index forms of a page", () => {
    expect(shardIndexName("s.items", 16)).toBe("items_shard16_idx");
    expect(shardIndexName(`x${"y".repeat(62)}`, 65_536).length).toBe(63);
    expect(shardPredicate(0, 1)).toBe("true");
    expect(readPageSql("t", 0, 1)).toBe(
      'SELECT id, payload FROM "public"."t" WHERE id > $1 ORDER BY id LIMIT $2',
    );
    expect(readPageSql("t", 2, 4)).toBe(
      'SELECT id, payload FROM "public"."t" WHERE (shard_hash % 4) = 2 AND id > $1 ORDER BY id LIMIT $2',
    );
    expect(() => shardPredicate(4, 4)).toThrow(RangeError);
  });
});
