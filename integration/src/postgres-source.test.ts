import { randomBytes } from "node:crypto";
import {
  DataSourceError,
  PostgresDataSource,
  type PostgresSourceConfig,
  parseDataSourceConfig,
  readPageSql,
  sequentialRecords,
} from "@org/coordinator";
import { shardOf } from "@org/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PostgresServer, startPostgres } from "./harness/postgres-server.js";

// The PostgreSQL data source against a real PostgreSQL (initdb into a temp dir, a free
// loopback port): the table it creates, what reading one shard costs, the plan it uses,
// upserts, and credentials.
let db: PostgresServer;
beforeAll(async () => {
  db = await startPostgres();
});
afterAll(async () => {
  await db?.stop();
});

let tableCounter = 0;
function configFor(extra: Partial<PostgresSourceConfig> = {}): PostgresSourceConfig {
  return parseDataSourceConfig("t", {
    kind: "postgres",
    table: `items_${tableCounter++}`,
    host: db.host,
    port: db.port,
    user: db.user,
    passwordFile: db.passwordFile,
    ...extra,
  }) as PostgresSourceConfig;
}

async function* from<T>(xs: Iterable<T>): AsyncIterable<T> {
  yield* xs;
}

const enc = new TextEncoder();
const bytewise = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function readShard(source: PostgresDataSource, shard: number, total: number, afterId = "") {
  const before = source.stats();
  const ids: string[] = [];
  for await (const r of source.read("g", shard, total, {
    afterId,
    pageSize: 100,
    signal: new AbortController().signal,
  }))
    ids.push(r.id);
  const after = source.stats();
  return {
    ids,
    rowsFetched: after.rowsFetched - before.rowsFetched,
    queries: after.queries - before.queries,
  };
}

describe("PostgreSQL data source", () => {
  it("computes shardOf in SQL exactly as the SDK does (digits, hashed, unicode, 30 digits)", async () => {
    const source = PostgresDataSource.create(configFor());
    try {
      const ids = [
        "0",
        "7",
        "007",
        "123456789012345678901234567890",
        "1234567890123456789012345678901", // 31 digits: hashed, like the SDK
        "order-7",
        "a",
        "ключ",
        "日本語-42",
        "x".repeat(300),
        ...Array.from({ length: 200 }, (_, i) => `k${i * 7919}-${(i * 31) % 17}`),
      ];
      await source.put("g", from(ids.map((id) => ({ id, payload: enc.encode(id) }))), {
        signal: new AbortController().signal,
      });
      const client = await db.connect();
      try {
        for (const total of [2, 3, 7, 16, 1000]) {
          const res = await client.query<{ id: string; s: string }>(
            `SELECT id, (shard_hash % ${total})::text AS s FROM ${source.config.table}`,
          );
          expect(res.rows.length).toBe(ids.length);
          for (const r of res.rows) expect(Number(r.s), `${r.id} of ${total}`).toBe(shardOf(r.id, total));
        }
      } finally {
        await client.end();
      }
    } finally {
      await source.close();
    }
  });

  it("reads one shard of 20,000 rows through its index: exactly its rows, in id order, resumable", async () => {
    const config = configFor({ indexShardCounts: [4] });
    const source = PostgresDataSource.create(config);
    try {
      const records = [
        ...sequentialRecords(10_000),
        ...Array.from({ length: 10_000 }, (_, i) => ({ id: `order-${i}`, payload: `p${i}` })),
      ];
      const put = await source.put(
        "g",
        from(records.map((r) => ({ id: r.id, payload: enc.encode(String(r.payload)) }))),
        { signal: new AbortController().signal },
      );
      expect(put).toMatchObject({ written: 20_000, unchanged: 0 });
      expect(put.batches).toBeGreaterThanOrEqual(40); // 500 per statement
      const all = records.map((r) => r.id).sort(bytewise);
      const figures: string[] = [];
      for (const total of [4, 7]) {
        // T = 7 has no index yet: the first read builds it in the background.
        if (total === 7) {
          await readShard(source, 0, 7);
          await source.settled();
          expect(source.indexedShardCounts()).toContain(7);
        }
        let union: string[] = [];
        for (let shard = 0; shard < total; shard++) {
          const { ids, rowsFetched, queries } = await readShard(source, shard, total);
          expect(ids).toEqual(all.filter((id) => shardOf(id, total) === shard));
          expect(rowsFetched).toBe(ids.length); // the shard's rows and only them
          if (shard === 0)
            figures.push(
              `T=${total}: shard 0 has ${ids.length} rows, fetched ${rowsFetched} in ${queries} queries`,
            );
          union = union.concat(ids);
        }
        expect(union.sort(bytewise)).toEqual(all);
      }
      console.log(`postgres source, 20,000 rows:\n  ${figures.join("\n  ")}`);
      // The plan: one index range scan of the shard index, no sort, no filter.
      const client = await db.connect();
      try {
        await client.query(`ANALYZE ${config.table}`);
        const plan = await client.query<{ "QUERY PLAN": string }>(
          `EXPLAIN ANALYZE ${readPageSql(config.table, 3, 4, { indexed: true })
            .replace("$1", "'order-5'")
            .replace("$2", "100")}`,
        );
        const text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
        console.log(`plan of a page of shard 3 of 4:\n${text}`);
        expect(text).toMatch(new RegExp(`Index Scan using ${config.table}_shard4_idx`));
        expect(text).not.toMatch(/Sort|Seq Scan|Filter/);
      } finally {
        await client.end();
      }
      // Resume after any id: exactly the rest of the shard.
      const { ids: rest } = await readShard(source, 2, 4, "order-5");
      expect(rest).toEqual(all.filter((id) => shardOf(id, 4) === 2 && bytewise(id, "order-5") > 0));
    } finally {
      await source.close();
    }
  });

  it("upserts idempotently by id: the same records again change nothing, changed payloads are counted", async () => {
    const source = PostgresDataSource.create(configFor());
    const signal = new AbortController().signal;
    try {
      const records = sequentialRecords(1200).map((r) => ({
        id: r.id,
        payload: enc.encode(String(r.payload)),
      }));
      expect(await source.put("g", from(records), { signal })).toMatchObject({ written: 1200, unchanged: 0 });
      expect(await source.put("g", from(records), { signal })).toMatchObject({ written: 0, unchanged: 1200 });
      // An id twice in one call: the last payload wins, within a statement and across them.
      const again = [
        { id: "0001", payload: enc.encode("first") },
        ...records.slice(0, 700),
        { id: "0001", payload: enc.encode("last") },
      ];
      const r = await source.put("g", from(again), { signal });
      expect(r.written).toBe(1); // 0001 changed; the rest as stored
      const client = await db.connect();
      try {
        const row = await client.query(`SELECT payload FROM ${source.config.table} WHERE id = '0001'`);
        expect(Buffer.from(row.rows[0].payload).toString()).toBe("last");
      } finally {
        await client.end();
      }
      // Payloads are bytes, not text: any byte sequence comes back as it went in.
      const binary = Array.from({ length: 50 }, (_, i) => ({
        id: `bin-${i}`,
        payload: randomBytes(1000 + i),
      }));
      await source.put("g", from(binary), { signal });
      const back = new Map<string, Uint8Array>();
      for await (const r of source.read("g", 0, 1, { afterId: "bin-", pageSize: 7, signal }))
        if (r.id.startsWith("bin-")) back.set(r.id, r.payload);
      for (const b of binary) expect(Buffer.from(back.get(b.id) ?? []).equals(b.payload), b.id).toBe(true);
    } finally {
      await source.close();
    }
  });

  it("fails fast with bad_credentials for a wrong password, a missing password file, an unset variable", async () => {
    const cases: Partial<PostgresSourceConfig>[] = [
      { passwordFile: undefined, passwordEnv: "SHARD_TEST_WRONG_PW" },
      { passwordFile: "/nonexistent/pw" },
      { passwordFile: undefined, passwordEnv: "SHARD_TEST_UNSET_PW" },
      { user: "nobody_here" },
    ];
    process.env.SHARD_TEST_WRONG_PW = "wrong";
    for (const extra of cases) {
      const source = PostgresDataSource.create(configFor(extra));
      const t0 = performance.now();
      try {
        const err = await source.verify().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, JSON.stringify(extra)).toBeInstanceOf(DataSourceError);
        expect((err as DataSourceError).code, (err as Error).message).toBe("bad_credentials");
        expect(performance.now() - t0).toBeLessThan(5000);
      } finally {
        await source.close();
      }
    }
    // An unreachable server is `unreachable`, within the connect timeout.
    const down = PostgresDataSource.create(configFor({ port: 1, connectTimeoutMs: 1000 }));
    await expect(down.verify()).rejects.toMatchObject({ code: "unreachable" });
    await down.close();
    // A secret in the config itself is refused before anything connects.
    expect(() => parseDataSourceConfig("g", { kind: "postgres", table: "t", password: "x" })).toThrow(
      /in clear/,
    );
  });
});
