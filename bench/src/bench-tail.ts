import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { EtcdCluster } from "@org/integration/harness";
import { allocationSites } from "./alloc-report.js";
import { loadAgainst, loadgenProcs, RATE_FLAGS, type Run } from "./bench-heartbeat.js";
import { benchScript } from "./children.js";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";
import { startBare, startEtcd, startLeader } from "./targets.js";

/** The leader's garbage collections so far, by kind (prom-client's nodejs_gc_duration_seconds). */
interface GcTotals {
  readonly count: Record<string, number>;
  readonly seconds: Record<string, number>;
}

async function gcTotals(httpUrl: string): Promise<GcTotals> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const count: Record<string, number> = {};
  const seconds: Record<string, number> = {};
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/gm)) {
    const kind = /kind="([^"]+)"/.exec(m[2] ?? "")?.[1] ?? "?";
    const into = m[1] === "sum" ? seconds : count;
    into[kind] = (into[kind] ?? 0) + Number(m[3]);
  }
  return { count, seconds };
}

/**
 * Ack latency tail at 5,000 streams at 1 Hz (BENCH_TAIL_STREAMS), the goal's own terms: bare grpc-js and the
 * leader back to back in each of three rounds (leader p99 < 20 ms in three consecutive
 * rounds, and leader/bare-grpc-js p99 <= 1.2 in each). The streams are split over several
 * load generator processes (`BENCH_LOADGEN_PROCS`, default 4), whose CPU is reported. The
 * leader's garbage collection during its window is read from its /metrics.
 *
 * BENCH_ALLOC=1 also samples what the leader allocates during its measuring window (V8's sampling
 * heap profiler, preloaded from alloc-sampler.js) and reports bytes per ack and the top
 * allocation sites. The profiler costs CPU: latency figures of such a run are not comparable.
 */
export async function benchTail(rep: Reporter, smoke: boolean): Promise<void> {
  // BENCH_TAIL_STREAMS / BENCH_TAIL_ROUNDS: other sizes (the 20,000-stream run).
  const streams = smoke ? 200 : Number(process.env.BENCH_TAIL_STREAMS ?? 5000);
  const rounds = smoke ? 1 : Number(process.env.BENCH_TAIL_ROUNDS ?? 3);
  if (!Number.isInteger(streams) || streams < 1 || !Number.isInteger(rounds) || rounds < 1)
    throw new Error("BENCH_TAIL_STREAMS and BENCH_TAIL_ROUNDS must be positive integers");
  const measureMs = smoke ? 3000 : 10_000;
  await using etcd: EtcdCluster = await startEtcd();
  const rows: Row[] = [];
  const alloc = process.env.BENCH_ALLOC === "1";
  const allocDir = alloc ? mkdtempSync(join(tmpdir(), "bench-alloc-")) : "";
  const siteRows: Row[] = [];
  const nodeFlags = process.env.RM_NODE_FLAGS;
  if (alloc) {
    process.env.RM_NODE_FLAGS = `${nodeFlags ?? ""} --import ${benchScript("alloc-sampler.js")}`;
    process.env.ALLOC_PROFILE_DIR = allocDir;
  }
  try {
    for (let i = 1; i <= rounds; i++) {
      rep.progress(`tail: round ${i}, bare grpc-js`);
      const bare = await startBare("grpc-js");
      let b: Run;
      try {
        b = await loadAgainst(bare, streams, "rate", measureMs, smoke ? 1500 : 3000);
      } finally {
        await bare.stop();
      }
      rep.progress(`tail: round ${i}, leader`);
      const leader = await startLeader(etcd, RATE_FLAGS);
      let l: Run;
      let gc0: GcTotals | undefined;
      let gc1: GcTotals | undefined;
      let allocPerAck: number | undefined;
      try {
        const url = leader.httpUrl ?? "";
        l = await loadAgainst(
          leader,
          streams,
          "rate",
          measureMs,
          smoke ? 2500 : 4000,
          undefined,
          async () => {
            // Scraped first: a scrape builds a snapshot of every member (not heartbeat work).
            gc0 = await gcTotals(url);
            if (alloc) {
              process.kill(leader.pid, "SIGUSR2");
              // Stopped when the window ends, before the generators close their streams (5,000
              // stream_ended log lines and detaches are not heartbeat work either).
              setTimeout(() => process.kill(leader.pid, "SIGUSR2"), measureMs);
            }
          },
        );
        gc1 = await gcTotals(url);
        if (alloc) {
          const file = join(allocDir, `alloc-${leader.pid}.heapprofile`);
          for (let waited = 0; !existsSync(file) && waited < 20_000; waited += 100)
            await new Promise((r) => setTimeout(r, 100));
          await new Promise((r) => setTimeout(r, 500)); // written in one call; let it finish
          const a = allocationSites(file, l.result.acks);
          allocPerAck = a.bytesPerUnit;
          for (const site of a.sites)
            siteRows.push({ round: i, site: site.site, "bytes per ack": Math.round(site.bytesPerUnit) });
        }
      } finally {
        await leader.stop();
      }
      const gc = (f: "count" | "seconds", kind: string) => (gc1?.[f][kind] ?? 0) - (gc0?.[f][kind] ?? 0);
      const windowS = l.result.windowMs / 1000;
      for (const r of [b, l])
        rows.push({
          round: i,
          target: r.target,
          streams,
          connected: r.result.connected,
          "acks/s": Math.round(r.result.acksPerSec),
          "p50 ms": round(r.result.latencyMs.p50),
          "p99 ms": round(r.result.latencyMs.p99),
          "max ms": round(r.result.latencyMs.max),
          "p99 / bare": r === l ? round(l.result.latencyMs.p99 / b.result.latencyMs.p99, 2) : "",
          "server CPU %": round(r.cpuPercent, 1),
          "RSS/stream KiB": round((r.rssBytes - r.baselineRssBytes) / 1024 / streams, 1),
          "minor GCs/s": r === l ? round(gc("count", "minor") / windowS, 2) : "",
          "minor GC ms/s": r === l ? round((gc("seconds", "minor") * 1000) / windowS, 1) : "",
          "major GC ms/s":
            r === l
              ? round(((gc("seconds", "major") + gc("seconds", "incremental")) * 1000) / windowS, 1)
              : "",
          "loadgen CPU %": round(r.result.loadgenCpuPercent, 1),
          // gRPC code: count of streams that ended during the run (a healthy run has none).
          "streams ended": Object.entries(r.result.ended)
            .map(([code, n]) => `${code}:${n}`)
            .join(" "),
          ...(alloc
            ? { "leader alloc bytes/ack": r === l ? Math.round(allocPerAck ?? Number.NaN) : "" }
            : {}),
        });
    }
  } finally {
    // Restored even when a round fails: the next benchmark of this run must not inherit them.
    if (alloc) {
      if (nodeFlags === undefined) delete process.env.RM_NODE_FLAGS;
      else process.env.RM_NODE_FLAGS = nodeFlags;
      rmSync(allocDir, { recursive: true, force: true });
    }
  }
  rep.table({
    measurement: "tail",
    title: `Ack latency tail: ${streams} streams at 1 Hz, bare grpc-js then the leader, ${rounds} rounds`,
    settings: {
      measureMs,
      loadgenProcs: loadgenProcs(streams),
      leaderFlags: RATE_FLAGS.join(" "),
      leaderNodeFlags: process.env.RM_NODE_FLAGS ?? "",
      note: "loadgen CPU % is summed over its processes; GC columns are the leader's, per second of its measuring window; RSS/stream is the largest RSS in the window less the RSS before any stream, per stream",
    },
    rows,
  });
  if (alloc)
    rep.table({
      measurement: "tail.alloc",
      title:
        "Where the leader allocates per ack (sampling heap profiler, collected objects included; self bytes by function)",
      settings: { samplingIntervalBytes: 4096 },
      rows: siteRows,
    });
}
