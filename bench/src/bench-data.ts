import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
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
    // One reader reads every shard several times a second (three timed passes of up to 8
    // shards each way): above the default 20 data calls per second per node.
    "--unary-rate-per-node",
    "10000",
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
        const bareOnce = () => bareRead(bare, table(d), shards);
        await bareOnce(); // warm the cache
        // The median of three passes each way: a pass of a 1,000-record shard lasts well
        // under a second, and one scheduler hiccup would decide the ratio.
        const b = median([await bareOnce(), await bareOnce(), await bareOnce()]);
        for (const source of ["pg", "etcd"] as const)
          for (const [gzip, rpc] of [
            [false, "pages"],
            [true, "pages"],
            [false, "records"],
          ] as const) {
            const group = `${source}-${d.name}`;
            const rmOnce = (address: string) =>
              readThroughRm(address, group, token.get(group) ?? "", shards, gzip, rpc);
            // Bytes on the wire from one pass through the counting proxy; the timed pass
            // connects straight to the leader, as the bare pg read connects to the database.
            proxy.reset();
            await rmOnce(proxy.address);
            const wireBytes = proxy.bytes.toClient;
            const cpu0 = cpuSeconds(leader.pid);
            const c0 = process.cpuUsage();
            const passes = [
              await rmOnce(leader.address),
              await rmOnce(leader.address),
              await rmOnce(leader.address),
            ];
            // CPU per record over the three passes.
            const rmCpu = (cpuSeconds(leader.pid) - cpu0) / 3;
            const cu = process.cpuUsage(c0);
            cu.user /= 3;
            cu.system /= 3;
            const r = median(passes);
            const perSec = r.n / r.s;
            fetchRows.push({
              source: source === "pg" ? "postgres" : "etcd",
              payload: d.name,
              shards: concurrency,
              rpc: rpc === "pages" ? "FetchShardDataPages" : "FetchShardData",
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
              `fetch ${group} shards=${concurrency} ${rpc} gzip=${gzip}: ${Math.round(perSec)} records/s`,
            );
          }
      }
    }
    rep.table({
      measurement: "data.fetch",
      title:
        "FetchShardData through the RM vs a bare pg keyset read of the same rows (same run); bytes on the wire and CPU per record",
      settings: {
        shardsInGroup: SHARDS,
        batchSize: BATCH,
        gzipMinBytes: 1024,
        passes: "median of 3 each way",
      },
      rows: fetchRows,
      notes: [
        "RM/bare: through-RM records/s over bare pg records/s for the same shards (goal >= 0.7)",
        "rpc: FetchShardDataPages (a page per message; what the SDK uses) or FetchShardData (a message per record)",
        "wire bytes/rec: HTTP/2 bytes from the RM to the client (counting proxy), per record",
        "100 B records are under gzip's 1 KiB threshold: sent as they are even with gzip on",
      ],
    });

    // The same reads with the replica on a core of its own, as deployed (replicas run on their
    // own hosts): the database, its backends and this process (the reader) pinned to CPU 0 in
    // both reads, the replica to CPU 1. On the shared two cores above, the replica's CPU comes
    // out of the database's and the reader's; here it does not.
    if (pinnable()) {
      const postmaster = await postmasterPid(bare[0] as pg.Client);
      const pinned = [process.pid, postmaster, ...childrenOf(postmaster)];
      pinCpus(pinned, "0");
      pinCpus([leader.pid], "1");
      const pinnedRows: Row[] = [];
      try {
        for (const d of sets.filter((x) => x.kind === "text"))
          for (const concurrency of [1, SHARDS]) {
            const shards = Array.from({ length: concurrency }, (_, i) => i);
            const group = `pg-${d.name}`;
            await bareRead(bare, table(d), shards);
            const b = median([
              await bareRead(bare, table(d), shards),
              await bareRead(bare, table(d), shards),
              await bareRead(bare, table(d), shards),
            ]);
            const read = () =>
              readThroughRm(leader.address, group, token.get(group) ?? "", shards, false, "pages");
            const r = median([await read(), await read(), await read()]);
            pinnedRows.push({
              payload: d.name,
              shards: concurrency,
              records: r.n,
              "RM records/s": Math.round(r.n / r.s),
              "RM MiB/s": round((r.n * d.bytes) / MiB / r.s, 1),
              "bare pg records/s": Math.round(b.n / b.s),
              "RM/bare": round(r.n / r.s / (b.n / b.s), 2),
            });
            rep.progress(`pinned fetch ${group} shards=${concurrency}: ${round(r.n / r.s / (b.n / b.s), 2)}`);
          }
      } finally {
        pinCpus([...pinned, ...childrenOf(postmaster), leader.pid], allCpus());
      }
      rep.table({
        measurement: "data.fetch-pinned",
        title:
          "FetchShardDataPages from PostgreSQL with the replica on a core of its own vs a bare pg read (same run, gzip off)",
        settings: {
          database_and_reader: "CPU 0 (both reads)",
          replica: "CPU 1",
          passes: "median of 3 each way",
        },
        rows: pinnedRows,
        notes: ["RM/bare: through-RM records/s over bare pg records/s for the same shards (goal >= 0.7)"],
      });
    } else rep.progress("data.fetch-pinned skipped: needs taskset and at least 2 CPUs");

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

/** Reads `shards` of `table` straight from PostgreSQL in keyset pages, one connection per shard. */
async function bareRead(
  clients: readonly pg.Client[],
  table: string,
  shards: readonly number[],
): Promise<{ n: number; s: number }> {
  const t0 = performance.now();
  const counts = await Promise.all(
    shards.map(async (s) => {
      const c = clients[s] as pg.Client;
      const sql = readPageSql(table, s, SHARDS, { indexed: true });
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
}

/** CPU pinning needs taskset (util-linux) and two CPUs. */
function pinnable(): boolean {
  if (availableParallelism() < 2) return false;
  try {
    execFileSync("taskset", ["-p", String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function allCpus(): string {
  return `0-${availableParallelism() - 1}`;
}

/** Pins every thread of each process to `cpus` (a taskset list); processes gone are skipped. */
function pinCpus(pids: readonly number[], cpus: string): void {
  for (const pid of pids)
    try {
      execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
    } catch {
      // exited meanwhile
    }
}

/** The postmaster: the parent of this connection's backend. */
async function postmasterPid(c: pg.Client): Promise<number> {
  const r = await c.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
  return parentOf(Number(r.rows[0]?.pid));
}

function parentOf(pid: number): number {
  // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Live children of `pid` (the postmaster's backends and helpers). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (parentOf(Number(name)) === pid) out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The pass with the median rate (records per second). */
function median(passes: readonly { n: number; s: number }[]): { n: number; s: number } {
  const sorted = [...passes].sort((a, b) => a.n / a.s - b.n / b.s);
  return sorted[Math.floor(sorted.length / 2)] as { n: number; s: number };
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
 * The reader's HTTP/2 connection as the SDK opens it (worker-sdk transport-security.ts):
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
  rpc: "pages" | "records",
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
        const req = { group, nodeId: "bench-reader", shardId, batchSize: BATCH, sessionToken: token };
        if (rpc === "pages") for await (const page of c.fetchShardDataPages(req)) n += page.records.length;
        else for await (const _ of c.fetchShardData(req)) n += 1;
        return n;
      }),
    );
    return { n: counts.reduce((a, b) => a + b, 0), s: (performance.now() - t0) / 1000 };
  } finally {
    manager.abort();
  }
}
