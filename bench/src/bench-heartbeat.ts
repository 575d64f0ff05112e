import type { EtcdCluster } from "@org/integration/harness";
import { NodeChild } from "./children.js";
import type { LoadResult } from "./load-streams.js";
import { MiB, ProcSampler } from "./proc-stats.js";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";
import { startBare, startEtcd, startLeader, type Target } from "./targets.js";

/** Leader flags for the 1 Hz scale runs: generous timeouts, so that scale (not timing) is measured. */
export const RATE_FLAGS = [
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  "10000",
  "--member-lease-ttl",
  "30",
  "--rebalance-delay",
  "2000",
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;
/**
 * Saturation: the leader refuses more than max(10, 5000/interval) heartbeats/s per stream
 * (burst 20). With an interval of 200 ms that is 25/s per stream; every target's streams are
 * paced to at most one send per SATURATE_GAP_MS (~22/s), with one heartbeat in flight, over
 * enough streams that the offered load (streams x 22/s) exceeds what any target can ack.
 * The leader closes a stream idle for 3 intervals (600 ms), which bounds the usable latency
 * (with 100 ms, 300 ms proved too tight: ack p99 under saturation is ~150-300 ms).
 */
export const SATURATE_GAP_MS = 45;
export const SATURATE_FLAGS = [
  "--heartbeat-interval",
  "200",
  "--session-timeout",
  "10000",
  "--member-lease-ttl",
  "30",
  "--rebalance-delay",
  "2000",
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;

export interface Run {
  readonly target: Target["kind"];
  readonly streams: number;
  readonly pattern: "rate" | "saturate";
  readonly result: LoadResult;
  readonly cpuPercent: number;
  readonly rssBytes: number;
  readonly baselineRssBytes: number;
  /** Load generator processes the streams were split over. */
  readonly loadgenProcs: number;
}

/**
 * How many load generator processes share the streams (`BENCH_LOADGEN_PROCS`, default 4):
 * one Node process holding 5,000 client streams measured its own GC pauses into the tail
 * (bare grpc-js p99 56 ms with one, 20-26 ms with four, same machine and minute).
 */
export function loadgenProcs(streams: number): number {
  const want = Number(process.env.BENCH_LOADGEN_PROCS ?? 4);
  const procs = Number.isInteger(want) && want >= 1 ? want : 4;
  return Math.max(1, Math.min(procs, Math.floor(streams / 25)));
}

export async function loadAgainst(
  target: Target,
  streams: number,
  pattern: "rate" | "saturate",
  measureMs: number,
  warmupMs: number,
  tlsCaFile?: string,
  /** Called when every generator has started its measuring window. */
  onMeasuring?: () => Promise<void>,
): Promise<Run> {
  const procs = loadgenProcs(streams);
  const gens = Array.from({ length: procs }, (_, i) => {
    // Streams split as evenly as they go; node ids kept apart by a prefix per process.
    const share = Math.floor(streams / procs) + (i < streams % procs ? 1 : 0);
    return new NodeChild("loadgen.js", [
      "load",
      "--target",
      target.address,
      "--transport",
      target.kind === "http2" ? "http2" : "grpc",
      "--streams",
      String(share),
      "--pattern",
      pattern,
      "--interval-ms",
      "1000",
      "--window",
      "1",
      "--min-gap-ms",
      String(SATURATE_GAP_MS),
      "--group",
      "bench",
      "--node-prefix",
      `g${i}-node`,
      "--per-channel",
      "100",
      "--warmup-ms",
      String(warmupMs),
      "--measure-ms",
      String(measureMs),
      ...(procs > 1 ? ["--samples"] : []),
      // BENCH_RAMP_MS: open the streams over this long instead of all at once.
      ...(process.env.BENCH_RAMP_MS === undefined ? [] : ["--ramp-ms", process.env.BENCH_RAMP_MS]),
      ...(tlsCaFile === undefined ? [] : ["--tls-ca", tlsCaFile]),
    ]);
  });
  try {
    await Promise.all(gens.map((g) => g.waitFor("connected", 180_000)));
    await Promise.all(gens.map((g) => g.waitFor("measuring", warmupMs + 30_000)));
    const sampler = new ProcSampler(target.pid, 250);
    await onMeasuring?.();
    const results = (await Promise.all(
      gens.map((g) => g.waitFor("result", measureMs + 30_000)),
    )) as unknown as LoadResult[];
    const w = sampler.stop();
    return {
      target: target.kind,
      streams,
      pattern,
      result: mergeResults(results),
      cpuPercent: w.cpuPercent,
      rssBytes: w.rssMaxBytes,
      baselineRssBytes: target.baselineRssBytes,
      loadgenProcs: procs,
    };
  } finally {
    await Promise.all(gens.map((g) => g.kill()));
  }
}

/**
 * One result from the generators' results: counts and rates summed, latency percentiles
 * from all samples together (not averaged percentiles), loadgen CPU summed over processes.
 */
export function mergeResults(results: readonly LoadResult[]): LoadResult {
  const [first] = results;
  if (first === undefined) throw new Error("no load results");
  if (results.length === 1) return first;
  const all = Float64Array.from(results.flatMap((r) => r.samplesMs ?? [])).sort();
  const pick = (p: number) => all[Math.min(all.length - 1, Math.ceil(p * all.length) - 1)] ?? Number.NaN;
  const ended: Record<string, number> = {};
  for (const r of results)
    for (const [code, n] of Object.entries(r.ended)) ended[code] = (ended[code] ?? 0) + n;
  const sum = (f: (r: LoadResult) => number) => results.reduce((a, r) => a + f(r), 0);
  return {
    t: "result",
    connected: sum((r) => r.connected),
    connectMs: Math.max(...results.map((r) => r.connectMs)),
    acks: sum((r) => r.acks),
    windowMs: Math.max(...results.map((r) => r.windowMs)),
    acksPerSec: sum((r) => r.acksPerSec),
    latencyMs: { count: all.length, p50: pick(0.5), p99: pick(0.99), max: all[all.length - 1] ?? Number.NaN },
    ended,
    loadgenCpuPercent: sum((r) => r.loadgenCpuPercent),
  };
}

export function row(r: Run): Row {
  const l = r.result.latencyMs;
  return {
    target: r.target,
    streams: r.streams,
    pattern: r.pattern,
    connected: r.result.connected,
    "acks/s": Math.round(r.result.acksPerSec),
    "p50 ms": round(l.p50),
    "p99 ms": round(l.p99),
    "max ms": round(l.max),
    "server CPU %": round(r.cpuPercent, 1),
    "server RSS MiB": round(r.rssBytes / MiB, 1),
    "RSS/stream KiB": round((r.rssBytes - r.baselineRssBytes) / 1024 / r.streams, 1),
    "loadgen CPU %": round(r.result.loadgenCpuPercent, 1),
    "loadgen procs": r.loadgenProcs,
    // gRPC code: count (14 = UNAVAILABLE, e.g. the leader's idle close; 8 = RESOURCE_EXHAUSTED).
    "streams ended": Object.entries(r.result.ended)
      .map(([code, n]) => `${code}:${n}`)
      .join(" "),
  };
}

/** CPU-seconds per 1,000 acks: what one ack costs the server (meaningful at 1 Hz, where acks/s are equal). */
const cpuPerKAck = (r: Run) => r.cpuPercent / 100 / (r.result.acksPerSec / 1000);

export function ratios(a: Run, base: Run): Row {
  return {
    streams: a.streams,
    pattern: a.pattern,
    vs: base.target,
    "acks/s ratio": round(a.result.acksPerSec / base.result.acksPerSec, 3),
    "CPU per ack ratio": round(cpuPerKAck(a) / cpuPerKAck(base), 2),
    "p99 ratio": round(a.result.latencyMs.p99 / base.result.latencyMs.p99, 2),
    "RSS/stream ratio": round(
      (a.rssBytes - a.baselineRssBytes) / Math.max(1, base.rssBytes - base.baselineRssBytes),
      2,
    ),
  };
}

export async function benchHeartbeat(rep: Reporter, smoke: boolean): Promise<void> {
  const sizes = smoke ? [100] : [100, 1000, 5000];
  const satStreams = smoke ? 100 : 5000;
  const measureMs = smoke ? 3000 : 10_000;
  await using etcd: EtcdCluster = await startEtcd();
  const runs: Run[] = [];
  const one = async (kind: Target["kind"], n: number, pattern: "rate" | "saturate") => {
    rep.progress(`heartbeat: ${kind}, ${n} streams, ${pattern}`);
    const target =
      kind === "leader"
        ? await startLeader(etcd, pattern === "rate" ? RATE_FLAGS : SATURATE_FLAGS)
        : await startBare(kind);
    try {
      // The leader needs its rebalance delay (2 s) after the last join to settle its version.
      const warmupMs = kind === "leader" ? (smoke ? 2500 : 4000) : smoke ? 1500 : 3000;
      runs.push(await loadAgainst(target, n, pattern, measureMs, warmupMs));
    } finally {
      await target.stop();
    }
  };
  // The three targets run back to back per size, so that each ratio compares like with like.
  for (const n of sizes)
    for (const kind of ["http2", "grpc-js", "leader"] as const) await one(kind, n, "rate");
  for (const kind of ["http2", "grpc-js", "leader"] as const) await one(kind, satStreams, "saturate");

  rep.table({
    measurement: "heartbeat",
    title: "Heartbeat path: leader (with etcd) vs bare grpc-js vs bare node:http2",
    settings: {
      rate: "1 Hz per stream, jittered start",
      saturate: `1 heartbeat in flight per stream, >= ${SATURATE_GAP_MS} ms between sends of a stream`,
      measureMs,
      streamsPerConnection: 100,
      leaderRateFlags: RATE_FLAGS.join(" "),
      leaderSaturateFlags: SATURATE_FLAGS.join(" "),
    },
    rows: runs.map(row),
  });
  const ratioRows: Row[] = [];
  const find = (t: Target["kind"], n: number, p: string) =>
    runs.find((r) => r.target === t && r.streams === n && r.pattern === p);
  for (const [n, p] of [...sizes.map((s) => [s, "rate"] as const), [satStreams, "saturate"] as const]) {
    const leader = find("leader", n, p);
    for (const base of ["http2", "grpc-js"] as const) {
      const b = find(base, n, p);
      if (leader !== undefined && b !== undefined) ratioRows.push(ratios(leader, b));
    }
  }
  rep.table({
    measurement: "heartbeat.ratio",
    title: "Heartbeat path: leader / bare (same run)",
    rows: ratioRows,
    notes: [
      "acks/s ratio is the throughput ratio (the goal is >= 0.5 vs http2 when saturated); at 1 Hz acks/s are",
      "equal by construction, so CPU per ack and p99 are what compare there.",
    ],
  });
}
