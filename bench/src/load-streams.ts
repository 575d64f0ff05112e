import { type BenchChannel, type BenchStream, grpcChannel, http2Channel } from "./transport.js";
import { encodeWorker } from "./wire.js";

export interface LoadOptions {
  readonly target: string;
  readonly transport: "grpc" | "http2";
  readonly streams: number;
  readonly pattern: "rate" | "saturate";
  /** Rate pattern: each stream heartbeats this often. */
  readonly intervalMs: number;
  /** Saturate pattern: heartbeats in flight per stream. */
  readonly window: number;
  /**
   * Saturate pattern: least time between two sends of one stream, so that no stream exceeds
   * the leader's per-stream heartbeat rate limit (the same pacing applies to every target).
   */
  readonly minGapMs: number;
  readonly group: string;
  readonly nodePrefix: string;
  readonly perChannel: number;
  readonly connectTimeoutMs: number;
  readonly warmupMs: number;
  readonly measureMs: number;
  /** gRPC over TLS, the target's certificate verified against this CA (PEM). */
  readonly tlsCa?: Buffer;
  /** Spread the stream opens over this long (ms; 0: all at once, a cold start). */
  readonly rampMs?: number;
  /** Also return every latency (ms, to the µs), so the results of several processes can be merged. */
  readonly samples?: boolean;
}

export interface LoadResult {
  readonly t: "result";
  readonly connected: number;
  readonly connectMs: number;
  readonly acks: number;
  readonly windowMs: number;
  readonly acksPerSec: number;
  /** Ack latency of heartbeats sent inside the window, in ms (sorted here, so only a summary travels). */
  readonly latencyMs: { count: number; p50: number; p99: number; max: number };
  /** Streams that ended before the run did, by gRPC code (a healthy run has none). */
  readonly ended: Record<string, number>;
  readonly loadgenCpuPercent: number;
  /** Every latency of the window, sorted (only with `samples`). */
  readonly samplesMs?: number[];
}

type Phase = "connect" | "warmup" | "measure" | "done";

/**
 * N heartbeat streams against one target. Each stream sends Hello, waits for the first
 * answer (Welcome), then heartbeats at a fixed rate (jittered start) or back to back with
 * a fixed window. Ack latency is measured per heartbeat with the monotonic clock; acks on
 * a stream come back in order, so a FIFO of send times per stream suffices.
 */
export async function runLoad(o: LoadOptions, emit: (m: object) => void): Promise<LoadResult> {
  let phase: Phase = "connect";
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  let acks = 0;
  const latencies: number[] = [];
  const ended: Record<string, number> = {};
  let welcomed = 0;
  let settled = 0;
  const channels: BenchChannel[] = [];
  const streams: BenchStream[] = [];
  const timers: NodeJS.Timeout[] = [];
  let allSettled: () => void = () => undefined;
  const settledPromise = new Promise<void>((r) => {
    allSettled = r;
  });

  for (let i = 0; i < o.streams; i++) {
    // A ramp opens one connection's streams at a time, evenly over rampMs.
    if (i > 0 && i % o.perChannel === 0 && (o.rampMs ?? 0) > 0)
      await new Promise((r) => setTimeout(r, ((o.rampMs ?? 0) * o.perChannel) / o.streams));
    if (i % o.perChannel === 0)
      channels.push(o.transport === "grpc" ? grpcChannel(o.target, o.tlsCa) : http2Channel(o.target));
    const channel = channels[channels.length - 1] as BenchChannel;
    const nodeId = `${o.nodePrefix}-${String(i).padStart(6, "0")}`;
    const sent: number[] = [];
    let seq = 0n;
    let open = false;
    let lastSend = Number.NEGATIVE_INFINITY;
    const heartbeat = () => {
      if (!open || phase === "done") return;
      seq += 1n;
      const now = performance.now();
      lastSend = now;
      sent.push(now);
      stream.write(
        encodeWorker({ seq, kind: { case: "heartbeat", value: { nodeId, ts: BigInt(Date.now()) } } }),
      );
    };
    const stream = channel.open({
      onMessage(m) {
        if (!open) {
          open = true;
          welcomed++;
          settled++;
          if (settled === o.streams) allSettled();
          if (o.pattern === "saturate") {
            for (let k = 0; k < o.window; k++) heartbeat();
          } else {
            const first = setTimeout(() => {
              heartbeat();
              timers.push(setInterval(heartbeat, o.intervalMs));
            }, Math.random() * o.intervalMs);
            timers.push(first);
          }
          return;
        }
        if (m.kind.case !== "heartbeatAck") return; // assignments, etc.
        const sentAt = sent.shift();
        const now = performance.now();
        if (sentAt !== undefined && sentAt >= windowStart && sentAt < windowEnd) latencies.push(now - sentAt);
        if (phase === "measure") acks++;
        if (o.pattern === "saturate") {
          const wait = lastSend + o.minGapMs - now;
          if (wait <= 0) heartbeat();
          else setTimeout(heartbeat, wait);
        }
      },
      onEnd(e) {
        if (phase === "done") return;
        const key = String(e.code);
        ended[key] = (ended[key] ?? 0) + 1;
        if (!open) {
          settled++;
          if (settled === o.streams) allSettled();
        }
        open = false;
      },
    });
    streams.push(stream);
    seq += 1n;
    stream.write(
      encodeWorker({
        seq,
        kind: { case: "hello", value: { group: o.group, nodeId, capacity: 1, clientVersion: "bench" } },
      }),
    );
  }

  const t0 = performance.now();
  await Promise.race([settledPromise, new Promise((r) => setTimeout(r, o.connectTimeoutMs))]);
  const connectMs = performance.now() - t0;
  emit({ t: "connected", connected: welcomed, ms: Math.round(connectMs) });
  phase = "warmup";
  await new Promise((r) => setTimeout(r, o.warmupMs));
  phase = "measure";
  const cpu0 = process.cpuUsage();
  windowStart = performance.now();
  emit({ t: "measuring" });
  await new Promise((r) => setTimeout(r, o.measureMs));
  windowEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  // Let acks of heartbeats sent near the end of the window arrive (their latency counts).
  phase = "done";
  await new Promise((r) => setTimeout(r, Math.min(2000, Math.max(200, o.intervalMs))));
  for (const t of timers) clearTimeout(t);
  for (const s of streams) s.cancel();
  for (const c of channels) c.close();
  latencies.sort((a, b) => a - b);
  const windowMs = windowEnd - windowStart;
  const pick = (p: number) =>
    latencies.length === 0
      ? Number.NaN
      : (latencies[Math.min(latencies.length - 1, Math.ceil(p * latencies.length) - 1)] ?? Number.NaN);
  return {
    t: "result",
    connected: welcomed,
    connectMs,
    acks,
    windowMs,
    acksPerSec: (acks / windowMs) * 1000,
    latencyMs: {
      count: latencies.length,
      p50: pick(0.5),
      p99: pick(0.99),
      max: latencies[latencies.length - 1] ?? Number.NaN,
    },
    ended,
    loadgenCpuPercent: ((cpu.user + cpu.system) / 1000 / windowMs) * 100,
    ...(o.samples === true ? { samplesMs: latencies.map((x) => Math.round(x * 1000) / 1000) } : {}),
  };
}
