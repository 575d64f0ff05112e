import { Counter, Histogram, Registry } from "prom-client";
import type { EtcdErrorKind } from "../store/etcd-errors.js";
import type { EtcdMetricsSink } from "../store/etcd-health.js";

/**
 * The replica's Prometheus metrics, in one registry that the HTTP server exports at
 * `/metrics` (it adds the process metrics and the gauges it computes from `status()`).
 *
 * - `shard_etcd_errors_total{op,kind}`: failed etcd calls by operation and
 *   {@link EtcdErrorKind} (`nospace`, `compacted`, `unavailable`, `too_large`, `auth`, `other`).
 * - `shard_etcd_request_duration_seconds{op}`: latency of etcd calls, failed ones included.
 *
 * `op` is a short fixed name per call site (`campaign`, `lease_grant`, `leader_read`,
 * `fenced_commit`, ...), never a key or a group, so the series stay few.
 *
 * @example
 * ```ts
 * const metrics = createMetrics();
 * metrics.etcdDuration("fenced_commit", 0.004);
 * metrics.etcdError("fenced_commit", "nospace");
 * await metrics.registry.metrics(); // the text exposition
 * ```
 */
export interface Metrics extends EtcdMetricsSink {
  readonly registry: Registry;
  readonly etcdErrors: Counter<"op" | "kind">;
  readonly etcdRequestDuration: Histogram<"op">;
}

/** Creates the metrics in a fresh registry (one per replica, so tests may run several). */
export function createMetrics(): Metrics {
  const registry = new Registry();
  const etcdErrors = new Counter({
    name: "shard_etcd_errors_total",
    help: "Failed etcd calls, by operation and kind (nospace, compacted, unavailable, too_large, auth, other)",
    labelNames: ["op", "kind"] as const,
    registers: [registry],
  });
  const etcdRequestDuration = new Histogram({
    name: "shard_etcd_request_duration_seconds",
    help: "Duration of etcd calls made by this replica, failed ones included",
    labelNames: ["op"] as const,
    // From a local etcd's ~1 ms to the 2 s call deadline.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers: [registry],
  });
  return {
    registry,
    etcdErrors,
    etcdRequestDuration,
    etcdError(op: string, kind: EtcdErrorKind) {
      etcdErrors.inc({ op, kind });
    },
    etcdDuration(op: string, seconds: number) {
      etcdRequestDuration.observe({ op }, seconds);
    },
  };
}
