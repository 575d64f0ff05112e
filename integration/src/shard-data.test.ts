import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoordinatorError,
  type DataReadStats,
  EtcdDataSource,
  keyLayout,
  loadShardData,
  readFactor,
  sequentialRecords,
} from "@org/coordinator";
import { shardOf } from "@org/proto";
import { Etcd3, GRPCResourceExhastedError, type IOptions } from "etcd3";
import { describe, expect, it } from "vitest";
import { coordinatorBin } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// The built-in data source against a real etcd: the layout `data load` writes, and what
// reading one shard costs (records fetched, counted by the source itself).
const env = useTestEnv(1);

let nsCounter = 0;
const freshNamespace = () => `/sd-${Date.now().toString(36)}-${nsCounter++}`;

async function readShard(
  source: EtcdDataSource,
  group: string,
  shard: number,
  total: number,
  afterId = "",
): Promise<{ ids: string[]; fetched: DataReadStats }> {
  const before = source.stats();
  const ids: string[] = [];
  for await (const r of source.read(group, shard, total, {
    afterId,
    pageSize: 100,
    signal: new AbortController().signal,
  }))
    ids.push(r.id);
  const after = source.stats();
  return {
    ids,
    fetched: {
      rangeRequests: after.rangeRequests - before.rangeRequests,
      recordsFetched: after.recordsFetched - before.recordsFetched,
      bytesFetched: after.bytesFetched - before.bytesFetched,
      pagesShrunk: after.pagesShrunk - before.pagesShrunk,
    },
  };
}

describe("built-in data source", () => {
  it("reads one shard of 10,000 records fetching only that shard's keys when T divides the bucket count", async () => {
    const ns = freshNamespace();
    const keys = keyLayout(ns);
    const records = sequentialRecords(10_000);
    const loaded = await loadShardData(env.client, keys, "big", records, { buckets: 240 });
    expect(loaded).toMatchObject({ records: 10_000, layout: { buckets: 240 } });
    // Batches of at most 127 records (+ the layout update: etcd's 128-op limit).
    expect(loaded.transactions).toBeGreaterThanOrEqual(Math.ceil(10_000 / 127));
    // Out of the way of `etcdctl get --prefix <ns>/` and of the leader's load.
    expect(await env.client.getAll().prefix(`${ns}/`).count()).toBe(0);
    expect(await env.client.getAll().prefix(`${ns}-data/big/b/`).count()).toBe(10_000);

    const source = new EtcdDataSource(env.client, keys);
    const all = records.map((r) => r.id);
    const figures: string[] = [];
    for (const total of [4, 16, 7]) {
      let union: string[] = [];
      for (let shard = 0; shard < total; shard++) {
        const { ids, fetched } = await readShard(source, "big", shard, total);
        const want = all.filter((id) => shardOf(id, total) === shard);
        expect(ids).toEqual(want); // ascending, exactly the shard's records
        // T divides 240: exactly the shard's keys. T = 7: gcd 1, every bucket (about 7x).
        const g = total / readFactor(total, 240); // gcd(240, T)
        const visited = all.filter((id) => shardOf(id, 240) % g === shard % g);
        expect(fetched.recordsFetched).toBe(visited.length);
        if (240 % total === 0) expect(fetched.recordsFetched).toBe(want.length);
        if (shard === 0)
          figures.push(
            `T=${total}: shard 0 kept ${ids.length}, fetched ${fetched.recordsFetched} records in ${fetched.rangeRequests} range requests (old layout: 10000)`,
          );
        union = union.concat(ids);
      }
      expect(union.sort()).toEqual(all);
    }
    console.log(`data source, 10,000 records in 240 buckets:\n  ${figures.join("\n  ")}`);

    // Resuming after any id continues exactly where the stream stopped.
    const { ids: rest, fetched } = await readShard(source, "big", 3, 4, "05003");
    expect(rest).toEqual(all.filter((id) => shardOf(id, 4) === 3 && id > "05003"));
    expect(fetched.recordsFetched).toBe(rest.length);
  });

  it("keeps pages under the client's receive limit when values are large", async () => {
    const ns = freshNamespace();
    const keys = keyLayout(ns);
    const big = "x".repeat(700 * 1024);
    const records = Array.from({ length: 24 }, (_, i) => ({ id: String(i), payload: big }));
    // One record per transaction: two would pass the 1 MiB request budget (etcd allows 1.5 MiB).
    const loaded = await loadShardData(env.client, keys, "wide", records, { buckets: 2 });
    expect(loaded.records).toBe(24);
    expect(loaded.transactions).toBeGreaterThanOrEqual(24);
    expect(loaded.layout.maxRecordBytes).toBeGreaterThan(700 * 1024);
    // One range over the group, as the old layout read it, is over etcd3's 4 MiB limit.
    const raw = new Etcd3({ hosts: env.etcd.endpoints, faultHandling: { host: () => noop, global: noop } });
    try {
      await expect(raw.getAll().prefix(`${ns}-data/wide/b/0/`).limit(100).exec()).rejects.toBeInstanceOf(
        GRPCResourceExhastedError,
      );
    } finally {
      raw.close();
    }
    const source = new EtcdDataSource(env.client, keys);
    const { ids, fetched } = await readShard(source, "wide", 0, 2);
    expect(ids).toEqual(
      records
        .map((r) => r.id)
        .filter((id) => Number(id) % 2 === 0)
        .sort(),
    );
    expect(fetched.pagesShrunk).toBe(0); // sized from the layout, never too large
    expect(fetched.rangeRequests).toBeGreaterThanOrEqual(ids.length);
  });

  it("shrinks a page that comes back too large (records written around the loader)", async () => {
    const ns = freshNamespace();
    const keys = keyLayout(ns);
    await loadShardData(env.client, keys, "raw", [{ id: "0", payload: "small" }], { buckets: 1 });
    // Written with plain puts: the layout still says the largest record is tiny.
    for (let i = 1; i <= 8; i++)
      await env.client.put(keys.dataRecord("raw", "0", String(i))).value("y".repeat(1024 * 1024));
    // A source with its own client: no retry of a too-large page, no circuit breaker.
    const source = EtcdDataSource.create(env.etcd.endpoints, keys);
    try {
      const { ids, fetched } = await readShard(source, "raw", 0, 1);
      expect(ids).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8"]);
      expect(fetched.pagesShrunk).toBeGreaterThan(0);
    } finally {
      await source.close();
    }
  });

  it("refuses a load with another bucket count than the group's layout", async () => {
    const keys = keyLayout(freshNamespace());
    await loadShardData(env.client, keys, "g", sequentialRecords(10), { buckets: 4 });
    const again = loadShardData(env.client, keys, "g", sequentialRecords(10), { buckets: 8 });
    await expect(again).rejects.toBeInstanceOf(CoordinatorError);
    await expect(again).rejects.toMatchObject({ code: "invalid_config" });
    // Without --buckets a second load follows the existing layout (and overwrites ids).
    const r = await loadShardData(env.client, keys, "g", [
      ...sequentialRecords(10),
      { id: "x", payload: "" },
    ]);
    expect(r.layout.buckets).toBe(4);
    expect(await env.client.getAll().prefix(keys.dataGroupPrefix("g")).count()).toBe(12); // 11 + layout
  });

  it("coordinator data load writes zero-padded ids in the layout, and reads JSON lines from --file", async () => {
    const ns = freshNamespace();
    const keys = keyLayout(ns);
    const etcd = env.etcd.endpoints.join(",");
    const help = spawnSync(process.execPath, [coordinatorBin, "data", "load", "--help"], {
      encoding: "utf8",
    });
    expect(help.stdout).toMatch(/zero-padded/);
    expect(help.stdout).toMatch(/000\.\.199/);
    const run = (...args: string[]) =>
      spawnSync(
        process.execPath,
        [coordinatorBin, "data", "load", "--etcd", etcd, "--namespace", ns, ...args],
        {
          encoding: "utf8",
          timeout: 30_000,
        },
      );
    const count = run("--group", "cli", "--count", "200");
    expect(count.status, count.stderr).toBe(0);
    expect(count.stdout).toMatch(new RegExp(`loaded 200 records into ${ns}-data/cli/ \\(4 buckets`));
    // 200 records: the default for a modulo group is 4 buckets (at least 32 records each).
    expect(await env.client.get(keys.dataRecord("cli", "1", "005")).string()).toBe("item-005");
    expect(await env.client.get(keys.dataRecord("cli", "3", "199")).string()).toBe("item-199");
    expect(await env.client.getAll().prefix(`${ns}/`).count()).toBe(0);

    // A sticky group's config chooses its shard count.
    await env.client.put(keys.config("st")).value(JSON.stringify({ strategy: "sticky", shards: 8 }));
    const dir = mkdtempSync(join(tmpdir(), "data-load-"));
    try {
      const file = join(dir, "records.jsonl");
      writeFileSync(
        file,
        `${JSON.stringify({ id: "order-7", payload: "p7" })}\n\n{"id":"a","payload":"pa"}\n`,
      );
      const fromFile = run("--group", "st", "--file", file);
      expect(fromFile.status, fromFile.stderr).toBe(0);
      expect(fromFile.stdout).toMatch(/loaded 2 records .*\(8 buckets/);
      expect(
        await env.client.get(keys.dataRecord("st", String(shardOf("order-7", 8)), "order-7")).string(),
      ).toBe("p7");
      writeFileSync(file, '{"id": 7, "payload": "x"}\n');
      const bad = run("--group", "st", "--file", file);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/bad record line/);
      const mismatch = run("--group", "st", "--count", "5", "--buckets", "3");
      expect(mismatch.status).toBe(2);
      expect(mismatch.stderr).toMatch(/laid out in 8 buckets/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;
/** A fault policy that runs the call once, as is (etcd3 only calls `execute`). */
const noop = {
  execute: <T>(fn: (context: { signal: AbortSignal; attempt: number }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve(fn({ signal: new AbortController().signal, attempt: 0 })),
} as unknown as FaultPolicy;
