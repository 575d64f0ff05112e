import { Counter, Histogram, Registry } from "prom-client";
import type { GroupMetricsSink } from "../membership/group.js";
import type { EtcdErrorKind } from "../store/etcd-errors.js";
import type { EtcdMetricsSink } from "../store/etcd-health.js";
import type { TaskMetricsSink } from "../tasks/task-ledger.js";

/**
 * The replica's Prometheus metrics, in one registry that the HTTP server exports at
 * `/metrics` (it adds the process metrics and the gauges it computes from `status()`).
 *
 * - `shard_etcd_errors_total{op,kind}`: failed etcd calls by operation and
 *   {@link EtcdErrorKind} (`nospace`, `compacted`, `unavailable`, `too_large`, `auth`, `other`).
 * - `shard_etcd_request_duration_seconds{op}`: latency of etcd calls, failed ones included.
 *
 * - `shard_member_joins_total{group,kind}`: joins (`new`, `incarnation`, `resumed`).
 * - `shard_member_removals_total{group,reason}`: removals; `reason` is `leave` for a clean
 *   leave, anything else (`session_timeout`, `release_timeout`, `lease_expired`,
 *   `restart_grace_expired`) is an expulsion.
 * - `shard_versions_written_total{group,phase}` and `shard_version_pending_seconds{group}`
 *   (how long a version waited for its releases before activating).
 * - `shard_releases_total{group}`: losers that released their shards.
 * - `shard_heartbeat_gap_seconds{group}`: time between two heartbeats of one member as the
 *   leader hears them; its p99 well above the heartbeat interval means acks are late (a
 *   slow network, a stalled worker or a stalled leader), the step before expulsions.
 * - `shard_leader_elections_total`: terms this replica started leading (summed over the
 *   replicas, the elections of the cluster: flapping shows here).
 *
 * - `shard_tasks_submitted_total`, `shard_tasks_dispatched_total`, `shard_tasks_succeeded_total`,
 *   `shard_tasks_failed_total`, `shard_tasks_cancelled_total` (`{group}`), and
 *   `shard_tasks_requeued_total{group}` (an attempt that ended without a final state: its
 *   worker gone or lost, a timeout, a retryable failure), counted by the leader.
 * - `shard_task_updates_dropped_total{group,reason}`: worker reports dropped as stale
 *   (`stale_attempt`, `wrong_worker`, `not_running`, `unknown_task`).
 * - `shard_task_start_latency_seconds{group}`: submit -> first dispatch of a task (the leader's
 *   clock; the worker starts it on receipt).
 * - The queue depth, `shard_tasks{group,state}`, is a gauge the HTTP server computes.
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
export interface Metrics extends EtcdMetricsSink, GroupMetricsSink, TaskMetricsSink {
  readonly registry: Registry;
  /** Counts a term this replica started leading. */
  elected(): void;
  /** Counts a HeartbeatStream refused with gRPC status `code` (its name). */
  streamRefused(code: string): void;
  /** One lease keep-alive's round trip: `lease` is `election` or `members`. */
  leaseKeepAlive(lease: "election" | "members", seconds: number): void;
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
  const joins = new Counter({
    name: "shard_member_joins_total",
    help: "Members that joined, by group and kind (new, incarnation, resumed)",
    labelNames: ["group", "kind"] as const,
    registers: [registry],
  });
  const removals = new Counter({
    name: "shard_member_removals_total",
    help: "Members removed, by group and reason (leave; any other reason is an expulsion)",
    labelNames: ["group", "reason"] as const,
    registers: [registry],
  });
  const versions = new Counter({
    name: "shard_versions_written_total",
    help: "Assignment versions written, by group and phase",
    labelNames: ["group", "phase"] as const,
    registers: [registry],
  });
  const pending = new Histogram({
    name: "shard_version_pending_seconds",
    help: "Time a pending version waited for releases before it became active",
    labelNames: ["group"] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const releases = new Counter({
    name: "shard_releases_total",
    help: "Shard releases received from members losing shards, by group",
    labelNames: ["group"] as const,
    registers: [registry],
  });
  const gaps = new Histogram({
    name: "shard_heartbeat_gap_seconds",
    help: "Time between two heartbeats of one member as the leader hears them",
    labelNames: ["group"] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30],
    registers: [registry],
  });
  const gapChildren = new Map<string, ReturnType<typeof gaps.labels>>();
  const taskCounters = Object.fromEntries(
    (["submitted", "dispatched", "succeeded", "failed", "cancelled", "requeued"] as const).map((e) => [
      e,
      new Counter({
        name: `shard_tasks_${e}_total`,
        help: `Tasks ${e}, by group (leader only)`,
        labelNames: ["group"] as const,
        registers: [registry],
      }),
    ]),
  ) as Record<
    "submitted" | "dispatched" | "succeeded" | "failed" | "cancelled" | "requeued",
    Counter<"group">
  >;
  const staleUpdates = new Counter({
    name: "shard_task_updates_dropped_total",
    help: "Worker task reports dropped as stale, by group and reason (leader only)",
    labelNames: ["group", "reason"] as const,
    registers: [registry],
  });
  const startLatency = new Histogram({
    name: "shard_task_start_latency_seconds",
    help: "Time from a task's submit to the dispatch of its first attempt (leader only)",
    labelNames: ["group"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const refused = new Counter({
    name: "shard_streams_refused_total",
    help: "HeartbeatStreams refused, by gRPC status (UNAVAILABLE from a follower, INVALID_ARGUMENT, ALREADY_EXISTS, RESOURCE_EXHAUSTED, ...)",
    labelNames: ["code"] as const,
    registers: [registry],
  });
  const keepAlive = new Histogram({
    name: "shard_lease_keepalive_seconds",
    help: "Round trip of lease keep-alives (election: the leader's election lease; members: member leases), sent to answered",
    labelNames: ["lease"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers: [registry],
  });
  const elections = new Counter({
    name: "shard_leader_elections_total",
    help: "Terms this replica started leading",
    registers: [registry],
  });
  return {
    registry,
    elected() {
      elections.inc();
    },
    streamRefused(code) {
      refused.inc({ code });
    },
    leaseKeepAlive(lease, seconds) {
      keepAlive.observe({ lease }, seconds);
    },
    memberJoined(group, kind) {
      joins.inc({ group, kind });
    },
    memberRemoved(group, why) {
      removals.inc({ group, reason: why });
    },
    versionWritten(group, phase) {
      versions.inc({ group, phase });
    },
    versionActivated(group, pendingMs) {
      pending.observe({ group }, pendingMs / 1000);
    },
    released(group) {
      releases.inc({ group });
    },
    heartbeatGap(group, ms) {
      // One child per group, kept: observe({ group }) hashes the labels on every heartbeat.
      let child = gapChildren.get(group);
      if (child === undefined) {
        child = gaps.labels({ group });
        gapChildren.set(group, child);
      }
      child.observe(ms / 1000);
    },
    taskEvent(group, event, n) {
      taskCounters[event].inc({ group }, n);
    },
    taskStaleUpdate(group, reason) {
      staleUpdates.inc({ group, reason });
    },
    taskStartLatency(group, ms) {
      startLatency.observe({ group }, Math.max(0, ms) / 1000);
    },
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
