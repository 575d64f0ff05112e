import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { readPageSql } from "@org/coordinator";
import { startCountingProxy, startPostgres } from "@org/integration/harness";
import { ShardService } from "@org/proto";
import { putShardData } from "@org/worker-sdk";
import pg from "pg";
// RawStream is not in @org/integration's exports: use its built JS (with its .d.ts).
import { RawStream } from "../../integration/dist/support/raw-client.js";
import { cpuSeconds, MiB, rssBytes } from "./proc-stats.js";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";
import { startEtcd, startLeader } from "./targets.js";

const SHARDS = 8;
const BATCH = 500;

/** A dataset: its payloads and how many records. */
interface Dataset {
  readonly name: string;
  readonly bytes: number;
  readonly kind: "text" | "random";
  readonly count: number;
}

function payloadOf(d: Dataset, i: number): Uint8Array {
  if (d.kind === "random") return randomBytes(d.bytes);
  // JSON-like text: what logs and events look like (gzip shrinks it several times).
  const base = JSON.stringify({
    id: i,
    kind: "order",
    status: "shipped",
    note: "lorem ipsum dolor sit amet ",
  });
  return new TextEncoder().encode(base.repeat(Math.ceil(d.bytes / base.length)).slice(0, d.bytes));
}

/**
 * The data plane: FetchShardData records/s and MiB/s through the RM from PostgreSQL against a
 * bare `pg` keyset read of the same rows in the same run (the ratio), with 1 and 8 shards read
 * at once, 100 B and 10 KiB payloads, gzip off and on, bytes on the wire and CPU per record;
 * the same through the etcd source; PutShardData records/s; and the leader's RSS while a
 * worker reads slowly.
 */
export async function benchData(rep: Reporter, smoke: boolean): Promise<void> {
  const sets: Dataset[] = [
    { name: "100B-text", bytes: 100, kind: "text", count: smoke ? 4000 : 80_000 },
    { name: "10KiB-text", bytes: 10 * 1024, kind: "text", count: smoke ? 400 : 8000 },
    { name: "10KiB-random", bytes: 10 * 1024, kind: "random", count: smoke ? 400 : 8000 },
  ];
  await using etcd = await startEtcd();
  const db = await startPostgres();
  const leader = await startLeader(etcd, [
    "--strategy",
    "sticky",
    "--shards",
    String(SHARDS),
    "--heartbeat-interval",
    "500",
    // Long: on a loaded machine a bench process busy reading must not lose its membership.
    "--session-timeout",
    "30000",
    "--member-lease-ttl",
    "45",
    "--rebalance-delay",
    "300",
  ]);
  const [host, port] = leader.address.split(":");
  const proxy = await startCountingProxy({ host: host ?? "", port: Number(port) });
  const { Etcd3 } = await import("etcd3");
  const client = new Etcd3({ hosts: etcd.endpoints });
  const bare = await Promise.all(
    Array.from({ length: SHARDS }, async () => {
      const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password });
      await c.connect();
      return c;
    }),
  );
  try {
    const nsKeys = await leaderNamespace(client);
    const table = (d: Dataset) => `bench_${d.name.replace("-", "_").toLowerCase()}`;
    // Groups: pg-<set> read from PostgreSQL, etcd-<set> from the built-in source.
    for (const d of sets) {
      await client.put(`${nsKeys}/groups/pg-${d.name}/config`).value(
        JSON.stringify({
          strategy: "sticky",
          shards: SHARDS,
          dataSource: {
            kind: "postgres",
            table: table(d),
            host: db.host,
            port: db.port,
            user: db.user,
            passwordFile: db.passwordFile,
            indexShardCounts: [SHARDS],
          },
        }),
      );
      await client
        .put(`${nsKeys}/groups/etcd-${d.name}/config`)
        .value(JSON.stringify({ strategy: "sticky", shards: SHARDS }));
    }

    // PutShardData: load every set into both sources, timed.
    const putRows: Row[] = [];
    for (const d of sets)
      for (const source of ["pg", "etcd"] as const)
        for (const gzip of d.kind === "text" && d.bytes > 1024 ? [false, true] : [false]) {
          const group = `${source}-${d.name}`;
          const records = Array.from({ length: d.count }, (_, i) => ({
            id: `r${String(i).padStart(7, "0")}`,
            payload: payloadOf(d, i),
          }));
          const t0 = performance.now();
          const cpu0 = cpuSeconds(leader.pid);
          const r = await putShardData(group, records, {
            coordinators: [leader.address],
            compression: gzip ? "gzip" : "none",
            expectedRecords: d.count,
          });
          const s = (performance.now() - t0) / 1000;
          putRows.push({
            source: source === "pg" ? "postgres" : "etcd",
            payload: d.name,
            gzip: gzip ? "on" : "off",
            records: d.count,
            "written/unchanged": `${r.written}/${r.unchanged}`,
            "records/s": Math.round(d.count / s),
            "MiB/s": round((d.count * d.bytes) / MiB / s, 1),
            "RM cpu µs/rec": round(((cpuSeconds(leader.pid) - cpu0) * 1e6) / d.count, 1),
          });
          rep.progress(`put ${group} gzip=${gzip}: ${Math.round(d.count / s)} records/s`);
        }
    rep.table({
      measurement: "data.put",
      title: "PutShardData: records/s through one replica (client stream, batched idempotent writes)",
      settings: { batch: "pg 500 rows per statement; etcd 127 records per transaction" },
      rows: putRows,
      notes: ["the gzip row sends the same records again: they are all 'unchanged' (idempotent by id)"],
    });

    // Own every shard of every group.
    const token = await ownAll(leader.address, sets);

    const fetchRows: Row[] = [];
    for (const d of sets) {
      const mib = (n: number) => (n * d.bytes) / MiB;
      for (const concurrency of [1, SHARDS]) {
        const shards = Array.from({ length: concurrency }, (_, i) => i);
        // Bare pg: the same keyset pages of the same rows, straight from the database.
        const bareOnce = async () => {
          const t0 = performance.now();
          const counts = await Promise.all(
            shards.map(async (s) => {
              const c = bare[s] as pg.Client;
              const sql = readPageSql(table(d), s, SHARDS, { indexed: true });
              let n = 0;
              let after = "";
              for (;;) {
                const page = await c.query(sql, [after, BATCH]);
                n += page.rows.length;
                const last = page.rows[page.rows.length - 1] as { id: string } | undefined;
                if (last === undefined || page.rows.length < BATCH) break;
                after = last.id;
              }
              return n;
            }),
          );
          return { n: counts.reduce((a, b) => a + b, 0), s: (performance.now() - t0) / 1000 };
        };
        await bareOnce(); // warm the cache
        const b = await bareOnce();
        for (const source of ["pg", "etcd"] as const)
          for (const gzip of [false, true]) {
            const group = `${source}-${d.name}`;
            const rmOnce = (address: string) =>
              readThroughRm(address, group, token.get(group) ?? "", shards, gzip);
            // Bytes on the wire from one pass through the counting proxy; the timed pass
            // connects straight to the leader, as the bare pg read connects to the database.
            proxy.reset();
            await rmOnce(proxy.address);
            const wireBytes = proxy.bytes.toClient;
            const cpu0 = cpuSeconds(leader.pid);
            const c0 = process.cpuUsage();
            const r = await rmOnce(leader.address);
            const rmCpu = cpuSeconds(leader.pid) - cpu0;
            const cu = process.cpuUsage(c0);
            const perSec = r.n / r.s;
            fetchRows.push({
              source: source === "pg" ? "postgres" : "etcd",
              payload: d.name,
              shards: concurrency,
              gzip: gzip ? "on" : "off",
              records: r.n,
              "records/s": Math.round(perSec),
              "MiB/s": round(mib(r.n) / r.s, 1),
              "bare pg records/s": source === "pg" ? Math.round(b.n / b.s) : "",
              "RM/bare": source === "pg" ? round(perSec / (b.n / b.s), 2) : "",
              "wire bytes/rec": Math.round(wireBytes / r.n),
              "RM cpu µs/rec": round((rmCpu * 1e6) / r.n, 1),
              "client cpu µs/rec": round((cu.user + cu.system) / r.n, 1),
            });
            rep.progress(
              `fetch ${group} shards=${concurrency} gzip=${gzip}: ${Math.round(perSec)} records/s`,
            );
          }
      }
    }
    rep.table({
      measurement: "data.fetch",
      title:
        "FetchShardData through the RM vs a bare pg keyset read of the same rows (same run); bytes on the wire and CPU per record",
      settings: { shardsInGroup: SHARDS, batchSize: BATCH, gzipMinBytes: 1024 },
      rows: fetchRows,
      notes: [
        "RM/bare: through-RM records/s over bare pg records/s for the same shards (goal >= 0.7)",
        "wire bytes/rec: HTTP/2 bytes from the RM to the client (counting proxy), per record",
        "100 B records are under gzip's 1 KiB threshold: sent as they are even with gzip on",
      ],
    });

    // A slow reader: the leader's RSS while one worker reads a 10 KiB shard slowly.
    const slow = sets[1] as Dataset;
    const group = `pg-${slow.name}`;
    const base = rssBytes(leader.pid);
    let peak = base;
    let n = 0;
    const t0 = performance.now();
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssBytes(leader.pid));
    }, 100);
    try {
      const baseUrl = `http://${leader.address}`;
      const manager = new Http2SessionManager(baseUrl);
      const c = createClient(ShardService, createGrpcTransport({ baseUrl, sessionManager: manager }));
      for await (const _ of c.fetchShardData({
        group,
        nodeId: "bench-reader",
        shardId: 0,
        batchSize: BATCH,
        sessionToken: token.get(group) ?? "",
      })) {
        n += 1;
        await sleep(2);
      }
      manager.abort();
    } finally {
      clearInterval(sampler);
    }
    rep.table({
      measurement: "data.slow-reader",
      title: "Leader RSS while a worker reads a PostgreSQL shard slowly (2 ms per record)",
      rows: [
        {
          records: n,
          "MiB streamed": round(n * (slow.bytes / MiB), 1),
          seconds: round((performance.now() - t0) / 1000, 1),
          "RSS before MiB": round(base / MiB, 1),
          "RSS peak MiB": round(peak / MiB, 1),
          "growth MiB": round((peak - base) / MiB, 1),
        },
      ],
    });
  } finally {
    for (const { s, beat } of keep.splice(0)) {
      clearInterval(beat);
      s.close();
    }
    client.close();
    await Promise.all(bare.map((c) => c.end()));
    await proxy.close();
    await leader.stop();
    await db.stop();
  }
}

/** The namespace the bench leader runs under (RmCluster picks a random one). */
async function leaderNamespace(client: import("etcd3").Etcd3): Promise<string> {
  const keys = await client.getAll().prefix("/test-").keys();
  const key = keys.find((k) => k.includes("/election/leader/"));
  if (key === undefined) throw new Error("no leader election key found under /test-*");
  return key.slice(0, key.indexOf("/election/"));
}

/** Joins every group as `bench-reader` and waits until it owns all shards; returns the session tokens. */
async function ownAll(address: string, sets: readonly Dataset[]): Promise<Map<string, string>> {
  const tokens = new Map<string, string>();
  for (const d of sets)
    for (const source of ["pg", "etcd"]) {
      const group = `${source}-${d.name}`;
      const s = new RawStream(address);
      s.hello(group, "bench-reader");
      const w = await s.waitFor((m) => m.kind.case === "welcome");
      tokens.set(group, w.kind.case === "welcome" ? w.kind.value.sessionToken : "");
      const beat = setInterval(() => s.heartbeat("bench-reader"), 300);
      await s.waitFor(
        (m) => m.kind.case === "heartbeatAck" && m.kind.value.active && m.kind.value.shards.length === SHARDS,
        20_000,
      );
      // Kept open (and heartbeating) until the process exits: the bench owns these groups.
      keep.push({ s, beat });
    }
  return tokens;
}
const keep: { s: RawStream; beat: NodeJS.Timeout }[] = [];

/**
 * The reader's HTTP/2 connection as the SDK should open it for data (see docs/data.md):
 * TCP_NODELAY, or each WINDOW_UPDATE it sends waits behind Nagle's algorithm for the
 * server's delayed ACK (40 ms on Linux) whenever the stream window fills; and a 4 MiB
 * stream window instead of 64 KiB, so a window lasts many records.
 */
const readerSessionOptions = { noDelay: true, settings: { initialWindowSize: 4 << 20 } };

/** Reads `shards` of `group` at once through the RM; returns records and seconds. */
async function readThroughRm(
  address: string,
  group: string,
  token: string,
  shards: readonly number[],
  gzip: boolean,
): Promise<{ n: number; s: number }> {
  const baseUrl = `http://${address}`;
  const manager = new Http2SessionManager(baseUrl, undefined, readerSessionOptions);
  const c = createClient(
    ShardService,
    createGrpcTransport({
      baseUrl,
      sessionManager: manager,
      acceptCompression: [compressionGzip],
      ...(gzip ? { sendCompression: compressionGzip } : {}),
    }),
  );
  const t0 = performance.now();
  try {
    const counts = await Promise.all(
      shards.map(async (shardId) => {
        let n = 0;
        for await (const _ of c.fetchShardData({
          group,
          nodeId: "bench-reader",
          shardId,
          batchSize: BATCH,
          sessionToken: token,
        }))
          n += 1;
        return n;
      }),
    );
    return { n: counts.reduce((a, b) => a + b, 0), s: (performance.now() - t0) / 1000 };
  } finally {
    manager.abort();
  }
}
