import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { keyLayout } from "@org/coordinator";
import { ShardService, shardOf } from "@org/proto";
import { connectWorker, getShardLocations, putShardData } from "@org/worker-sdk";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CountingProxy, startCountingProxy } from "./harness/counting-proxy.js";
import { type PostgresServer, startPostgres } from "./harness/postgres-server.js";
import { RawStream } from "./support/raw-client.js";
import { coordinatorBin, RmCluster } from "./support/rm-cluster.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// FetchShardData, PutShardData, data locations and gzip with the PostgreSQL source, against
// a real PostgreSQL and real replica processes.
const env = useTestEnv(1);
let db: PostgresServer;
let rm: RmCluster;
let proxy: CountingProxy;
beforeAll(async () => {
  db = await startPostgres();
  rm = await RmCluster.start({ etcd: env.etcd.endpoints, count: 2, args: fastFlags });
  const leader = await rm.waitForLeader();
  const [host, port] = leader.address.split(":");
  proxy = await startCountingProxy({ host: host ?? "", port: Number(port) });
});
afterAll(async () => {
  // A replica must survive everything done to the database here.
  const dead = (rm?.replicas ?? [])
    .filter((r) => !r.running)
    .map((r) => `${r.id}: ${r.stderr.slice(-5).join(" | ")}`);
  await proxy?.close();
  await rm?.stop();
  await db?.stop();
  expect(dead).toEqual([]);
});

const bytewise = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function configure(group: string, extra: Record<string, unknown> = {}, shards = 4): Promise<void> {
  const keys = keyLayout(rm.namespace);
  await env.client.put(keys.config(group)).value(
    JSON.stringify({
      strategy: "sticky",
      shards,
      dataSource: {
        kind: "postgres",
        table: `${group.replaceAll("-", "_")}_items`,
        host: db.host,
        port: db.port,
        user: db.user,
        passwordFile: db.passwordFile,
        ...extra,
      },
    }),
  );
}

/** A raw member of `group` that owns every shard once the version is active; heartbeats until closed. */
async function rawMember(group: string, nodeId: string) {
  const leader = await rm.waitForLeader();
  const s = new RawStream(leader.address);
  s.hello(group, nodeId);
  const welcome = await s.waitFor((m) => m.kind.case === "welcome");
  const token = welcome.kind.case === "welcome" ? welcome.kind.value.sessionToken : "";
  const beat = setInterval(() => s.heartbeat(nodeId), 300);
  await s.waitFor(
    (m) =>
      (m.kind.case === "heartbeatAck" && m.kind.value.active && m.kind.value.shards.length > 0) ||
      (m.kind.case === "assignment" && m.kind.value.phase === 2 && m.kind.value.shards.length > 0),
    15_000,
  );
  return {
    token,
    stream: s,
    close() {
      clearInterval(beat);
      s.close();
    },
  };
}

function shardClient(address: string, gzip = false) {
  const baseUrl = `http://${address}`;
  const manager = new Http2SessionManager(baseUrl);
  const client = createClient(
    ShardService,
    createGrpcTransport({
      baseUrl,
      sessionManager: manager,
      ...(gzip ? { sendCompression: compressionGzip } : {}),
      acceptCompression: [compressionGzip],
    }),
  );
  return { client, close: () => manager.abort() };
}

const records = (n: number, payload: (i: number) => string) =>
  Array.from({ length: n }, (_, i) => ({ id: `rec-${String(i).padStart(6, "0")}`, payload: payload(i) }));

describe("PostgreSQL data source through the RM", () => {
  it("uploads with data load and putShardData (idempotent, rejections reported), serves each shard exactly, and hands out locations that read the same rows", async () => {
    await configure("pg-a");
    const leader = await rm.waitForLeader();
    // `coordinator data load` through PutShardData, replicas found from the election keys.
    const load = (...args: string[]) =>
      spawnSync(
        process.execPath,
        [
          coordinatorBin,
          "data",
          "load",
          "--etcd",
          env.etcd.endpoints.join(","),
          "--namespace",
          rm.namespace,
          ...args,
        ],
        { encoding: "utf8", timeout: 60_000 },
      );
    const first = load("--group", "pg-a", "--count", "3000");
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(
      /loaded 3000 records into group pg-a \(postgres source: 3000 written, 0 unchanged, 0 rejected/,
    );
    const again = load("--group", "pg-a", "--count", "3000", "--gzip");
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 written, 3000 unchanged/);

    // The SDK: a bad id and an oversized record are rejected alone; the rest is stored.
    const summary = await putShardData(
      "pg-a",
      [
        { id: "order-1", payload: "one" },
        { id: "", payload: "no id" },
        { id: "big", payload: "x".repeat(1_100_000) },
        { id: "order-2", payload: "two" },
      ],
      { coordinators: [leader.address] },
    );
    expect(summary).toMatchObject({ received: 4, written: 2, unchanged: 0, rejected: 2, source: "postgres" });
    expect(summary.errors.map((e) => [e.index, e.code])).toEqual([
      [1, "invalid_argument"],
      [2, "resource_exhausted"],
    ]);

    const all = [
      ...Array.from({ length: 3000 }, (_, i) => String(i).padStart(4, "0")),
      "order-1",
      "order-2",
    ].sort(bytewise);
    const member = await rawMember("pg-a", "reader-1");
    const { client, close } = shardClient(leader.address);
    const direct = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password });
    await direct.connect();
    try {
      const info = await getShardLocations({ coordinators: rm.addresses, group: "pg-a", nodeId: "reader-1" });
      expect(info.shards).toEqual([0, 1, 2, 3]);
      for (const shard of info.shards) {
        const ids: string[] = [];
        for await (const r of client.fetchShardData({
          group: "pg-a",
          nodeId: "reader-1",
          shardId: shard,
          batchSize: 200,
          sessionToken: member.token,
        }))
          ids.push(r.id);
        expect(ids).toEqual(all.filter((id) => shardOf(id, 4) === shard));
        // FetchShardDataPages: the same records, in the same order, at most batch_size a page.
        const pageSizes: number[] = [];
        const paged: string[] = [];
        for await (const p of client.fetchShardDataPages({
          group: "pg-a",
          nodeId: "reader-1",
          shardId: shard,
          batchSize: 200,
          sessionToken: member.token,
        })) {
          pageSizes.push(p.records.length);
          for (const r of p.records) paged.push(r.id);
        }
        expect(paged).toEqual(ids);
        expect(Math.max(...pageSizes)).toBeLessThanOrEqual(200);
        expect(Math.min(...pageSizes)).toBeGreaterThan(0);
        expect(pageSizes.length).toBeLessThan(ids.length / 50);
        // Direct read: the location's query, paged by its keyset, gives the same rows.
        const loc = info.locations.get(shard);
        expect(loc?.kind).toBe("postgres");
        expect(loc?.predicate).toBe(`(shard_hash % 4) = ${shard}`);
        const directIds: string[] = [];
        let after = "";
        for (;;) {
          const page = await direct.query<{ id: string }>(loc?.query ?? "", [after, 500]);
          for (const row of page.rows) directIds.push(row.id);
          const last = page.rows[page.rows.length - 1];
          if (last === undefined || page.rows.length < 500) break;
          after = last.id;
        }
        expect(directIds).toEqual(ids);
      }
      // Resume after a dropped stream: the rest of the shard, exactly.
      const ac = new AbortController();
      const head: string[] = [];
      await expect(
        (async () => {
          for await (const r of client.fetchShardData(
            { group: "pg-a", nodeId: "reader-1", shardId: 1, batchSize: 50, sessionToken: member.token },
            { signal: ac.signal },
          )) {
            head.push(r.id);
            if (head.length === 120) ac.abort();
          }
        })(),
      ).rejects.toThrow();
      const rest: string[] = [];
      for await (const r of client.fetchShardData({
        group: "pg-a",
        nodeId: "reader-1",
        shardId: 1,
        afterId: head[head.length - 1] ?? "",
        sessionToken: member.token,
      }))
        rest.push(r.id);
      expect([...head, ...rest]).toEqual(all.filter((id) => shardOf(id, 4) === 1));
    } finally {
      await direct.end();
      close();
      member.close();
    }
  });

  it("ends a stream whose member leaves mid-read (not the owner any more), and a stream cut by a database restart with UNAVAILABLE; the SDK resumes from its cursor", async () => {
    await configure("pg-b", {}, 2);
    const leader = await rm.waitForLeader();
    // 4 KiB payloads: a shard is far more than HTTP/2 windows and grpc-js buffers hold, so the
    // server is still streaming when the shard moves.
    await putShardData(
      "pg-b",
      records(4000, (i) => `payload-${i}-`.padEnd(4096, "p")),
      {
        coordinators: [leader.address],
      },
    );
    const all = records(4000, () => "").map((r) => r.id);

    // Ownership lost mid-stream: the member leaves while it reads slowly.
    const member = await rawMember("pg-b", "leaver");
    const { client, close } = shardClient(leader.address);
    try {
      let got = 0;
      const reading = (async () => {
        for await (const _ of client.fetchShardData({
          group: "pg-b",
          nodeId: "leaver",
          shardId: 0,
          batchSize: 20,
          sessionToken: member.token,
        })) {
          got += 1;
          if (got === 50) member.stream.send({ kind: { case: "leave", value: { reason: "test" } } });
          await sleep(5);
        }
      })();
      const err = await reading.then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      // The re-check finds the member gone (PERMISSION_DENIED: its token matches nobody) or its
      // shard reassigned (FAILED_PRECONDITION), whichever it reads first: the SDK maps both to not_owner.
      expect([Code.FailedPrecondition, Code.PermissionDenied], err?.message).toContain(err?.code);
      expect(got).toBeLessThan(2000);

      // The database goes down mid-stream: UNAVAILABLE, naming the data source. (Not awaited
      // in the loop: a reader that stops reading stops the RM's queries too.)
      const second = await rawMember("pg-b", "reader-2");
      try {
        let n = 0;
        let stopped: Promise<void> | undefined;
        const cut = (async () => {
          for await (const _ of client.fetchShardData({
            group: "pg-b",
            nodeId: "reader-2",
            shardId: 1,
            batchSize: 10,
            sessionToken: second.token,
          })) {
            n += 1;
            if (n === 30) stopped = db.stopServer();
            await sleep(2);
          }
        })();
        const cutErr = await cut.then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        expect(cutErr?.code, cutErr?.message).toBe(Code.Unavailable);
        expect(cutErr?.rawMessage).toMatch(/data source failed/);
        expect(n).toBeLessThan(2000);
        await stopped;
        await db.start();
      } finally {
        second.close();
      }
    } finally {
      close();
      member.close();
    }

    // The SDK: a restart mid-read is survived by resuming after the last record received.
    const worker = await connectWorker({ coordinators: rm.addresses, group: "pg-b", nodeId: "sdk-1" });
    try {
      for (let i = 0; i < 200 && worker.assignment.running.length < 2; i++) await sleep(50);
      expect(worker.assignment.running).toEqual([0, 1]);
      const ids: string[] = [];
      let outage: Promise<number> | undefined;
      for await (const r of worker.fetchShardData(0, { batchSize: 20 })) {
        ids.push(r.id);
        // Down for a second while the worker keeps reading: its stream fails with UNAVAILABLE
        // and the SDK retries after the last record it received.
        if (ids.length === 100)
          outage = (async () => {
            await db.stopServer();
            await sleep(1000);
            await db.start();
            return ids.length;
          })();
        await sleep(1);
      }
      const readWhenBack = await outage;
      expect(readWhenBack).toBeLessThan(2000); // the outage fell inside the read
      expect(ids).toEqual(all.filter((id) => shardOf(id, 2) === 0));
    } finally {
      await worker.close();
    }
  });

  it("reads no further ahead of a slow or stalled reader than a page (pull-based end to end)", async () => {
    await configure("pg-c", {}, 1);
    const leader = await rm.waitForLeader();
    const payload = "z".repeat(10 * 1024);
    const n = 6000; // 59 MiB in the one shard
    const up = await putShardData(
      "pg-c",
      records(n, () => payload),
      { coordinators: [leader.address] },
    );
    expect(up.written).toBe(n);
    const member = await rawMember("pg-c", "slow");
    const { client, close } = shardClient(leader.address);
    // What the leader read from PostgreSQL, from its own counter: compared with what this
    // reader took, it is the read-ahead, exact, where the leader's RSS would mostly show how
    // lazily V8 collects the garbage of 59 MiB passing through (17 to 34 MiB, buffering or not).
    const readFromStore = async () => {
      const text = await (await fetch(`${leader.httpUrl}/metrics`)).text();
      const m = /^shard_data_source_bytes_read_total\{[^}]*kind="postgres"[^}]*\} (\d+)$/m.exec(text);
      if (m?.[1] === undefined)
        throw new Error("shard_data_source_bytes_read_total{kind=postgres} not exported");
      return Number(m[1]);
    };
    const rss = () => {
      const status = readFileSync(`/proc/${leader.pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
    };
    const MiB = 2 ** 20;
    try {
      const base = await readFromStore();
      const rssBase = rss();
      let rssPeak = rssBase;
      let got = 0;
      let taken = 0;
      const aheadSeen: number[] = [];
      for await (const r of client.fetchShardData({
        group: "pg-c",
        nodeId: "slow",
        shardId: 0,
        batchSize: 100,
        sessionToken: member.token,
      })) {
        got += 1;
        taken += r.id.length + r.payload.length;
        if (got % 100 === 0) rssPeak = Math.max(rssPeak, rss());
        if (got === 500 || got === 2500) {
          // Stalled for a while: a server that ignored flow control would read the rest now.
          await sleep(1500);
          aheadSeen.push((await readFromStore()) - base - taken);
        }
        if (got < 3000) await sleep(1); // slow for the first half, then as fast as it goes
      }
      expect(got).toBe(n);
      const total = (await readFromStore()) - base;
      console.log(
        `slow reader: ${n} records of 10 KiB (${((n * payload.length) / MiB).toFixed(0)} MiB) streamed; read from PostgreSQL ahead of the reader while it stalled: ${aheadSeen.map((b) => `${(b / MiB).toFixed(1)} MiB`).join(", ")}; leader RSS ${(rssBase / MiB).toFixed(0)} -> peak ${(rssPeak / MiB).toFixed(0)} MiB`,
      );
      // Everything was read once (the counter counts what this read fetched).
      expect(total).toBe(taken);
      // The read-ahead while the reader stalled: the leader's page in hand and the one it
      // fetches ahead (1 MiB each by default), plus what the HTTP/2 windows and the loopback
      // socket buffers hold in transit; a leader that buffered the shard would be ~50 MiB ahead.
      for (const ahead of aheadSeen) expect(ahead).toBeLessThan(12 * MiB);
    } finally {
      close();
      member.close();
    }
  });

  it("gzips FetchShardData for a client that compresses its request: fewer bytes on the wire, same records", async () => {
    await configure("pg-d", {}, 1);
    const leader = await rm.waitForLeader();
    const text = (i: number) => JSON.stringify({ i, note: "compressible ".repeat(300) }); // ~4 KiB
    await putShardData("pg-d", records(500, text), { coordinators: [leader.address], compression: "gzip" });
    const member = await rawMember("pg-d", "zip");
    try {
      const read = async (gzip: boolean) => {
        const { client, close } = shardClient(proxy.address, gzip);
        proxy.reset();
        const out: string[] = [];
        try {
          for await (const r of client.fetchShardData({
            group: "pg-d",
            nodeId: "zip",
            shardId: 0,
            batchSize: 100,
            sessionToken: member.token,
          }))
            out.push(new TextDecoder().decode(r.payload));
        } finally {
          close();
        }
        return { out, bytes: proxy.bytes.toClient };
      };
      const plain = await read(false);
      const zipped = await read(true);
      expect(zipped.out).toEqual(plain.out);
      expect(plain.out.length).toBe(500);
      const ratio = plain.bytes / zipped.bytes;
      console.log(`gzip: ${plain.bytes} bytes plain, ${zipped.bytes} gzipped (${ratio.toFixed(1)}x)`);
      expect(ratio).toBeGreaterThan(3);
    } finally {
      member.close();
    }
  });

  it("the SDK worker: shardLocation() for its running shards as GetShardInfo gives them, gzip by its compression option, a refused source as failed_precondition", async () => {
    await configure("pg-e", {}, 1);
    const leader = await rm.waitForLeader();
    const text = (i: number) => JSON.stringify({ i, note: "compressible ".repeat(300) });
    await putShardData("pg-e", records(300, text), { coordinators: [leader.address] });
    const readAll = async (compression: "none" | "gzip", nodeId: string) => {
      const worker = await connectWorker({
        coordinators: [proxy.address],
        group: "pg-e",
        nodeId,
        compression,
      });
      try {
        for (let i = 0; i < 200 && worker.assignment.running.length < 1; i++) await sleep(50);
        expect(worker.assignment.running).toEqual([0]);
        const loc = worker.shardLocation(0);
        const info = await getShardLocations({ coordinators: [leader.address], group: "pg-e", nodeId });
        expect(loc).toBeDefined();
        expect(loc).toEqual(info.locations.get(0));
        expect(loc).toMatchObject({ kind: "postgres", shard: 0, totalShards: 1 });
        expect(worker.shardLocation(1)).toBeUndefined(); // not ours
        proxy.reset();
        const out: string[] = [];
        for await (const r of worker.fetchShardData(0, { batchSize: 100 }))
          out.push(new TextDecoder().decode(r.payload));
        return { out, bytes: proxy.bytes.toClient };
      } finally {
        await worker.close();
      }
    };
    const plain = await readAll("none", "sdk-plain");
    const zipped = await readAll("gzip", "sdk-zip");
    expect(plain.out.length).toBe(300);
    expect(zipped.out).toEqual(plain.out);
    console.log(`SDK gzip: ${plain.bytes} bytes plain, ${zipped.bytes} gzipped`);
    expect(plain.bytes / zipped.bytes).toBeGreaterThan(3);

    // The source refuses the coordinators' credentials: not a lost shard, an operator's problem.
    await configure("pg-e", { passwordFile: undefined, passwordEnv: "SHARD_TEST_NOT_SET" }, 1);
    const worker = await connectWorker({ coordinators: rm.addresses, group: "pg-e", nodeId: "sdk-bad" });
    try {
      for (let i = 0; i < 200 && worker.assignment.running.length < 1; i++) await sleep(50);
      const err = await (async () => {
        for await (const _ of worker.fetchShardData(0)) {
          // nothing comes
        }
      })().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ name: "WorkerError", code: "failed_precondition" });
      expect(String(err)).toMatch(/bad_credentials/);
    } finally {
      await worker.close();
    }
  });

  it("fails data calls of a group whose credentials are refused at once, with a clear status", async () => {
    await configure("pg-bad", { passwordFile: undefined, passwordEnv: "SHARD_TEST_NOT_SET" });
    const leader = await rm.waitForLeader();
    const member = await rawMember("pg-bad", "bad-1");
    const { client, close } = shardClient(leader.address);
    try {
      const t0 = performance.now();
      const err = await (async () => {
        for await (const _ of client.fetchShardData({
          group: "pg-bad",
          nodeId: "bad-1",
          shardId: 0,
          sessionToken: member.token,
        })) {
          // nothing comes
        }
      })().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.FailedPrecondition);
      expect(err?.rawMessage).toMatch(/SHARD_TEST_NOT_SET/);
      expect(err?.metadata.get("x-shard-data-error")).toBe("bad_credentials");
      expect(performance.now() - t0).toBeLessThan(10_000);
      await leader.waitForLog((l) => l.event === "data_source_invalid" && l.group === "pg-bad", 5000);
      // A wrong password, through the upload path and the CLI: the database's own words.
      await configure("pg-bad", { passwordFile: "/etc/hostname" });
      const up = spawnSync(
        process.execPath,
        [
          coordinatorBin,
          "data",
          "load",
          "--etcd",
          env.etcd.endpoints.join(","),
          "--namespace",
          rm.namespace,
          "--group",
          "pg-bad",
          "--count",
          "10",
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      expect(up.status).toBe(2);
      expect(up.stderr).toMatch(/password authentication failed/);
    } finally {
      close();
      member.close();
    }
  });
});
