import type { WorkerEventBody } from "./worker-event.js";

/**
 * One measurement the worker reports through the `metrics` option. Names follow Prometheus
 * conventions (`_total` for counters, units in the name), so an adapter can register them as
 * they are; `labels` is empty or carries the label named in the name's documentation.
 *
 * | name | kind | labels | what |
 * | --- | --- | --- | --- |
 * | `shard_worker_connects_total` | counter | | streams welcomed by a leader |
 * | `shard_worker_disconnects_total` | counter | `code` | streams lost, by why |
 * | `shard_worker_stale_views_total` | counter | `reason` | views refused as older than one acted on |
 * | `shard_worker_fenced_total` | counter | | times the self-fence ran out |
 * | `shard_worker_assignment_version` | gauge | | the version of the view in force |
 * | `shard_worker_running_shards` | gauge | | shard handlers running now |
 * | `shard_worker_tasks_started_total` | counter | | task attempts started here |
 * | `shard_worker_tasks_finished_total` | counter | `state` | attempts ended: succeeded, failed, cancelled |
 * | `shard_worker_heartbeat_ack_seconds` | histogram | | heartbeat sent to its ack received |
 */
export interface WorkerMetric {
  readonly name: string;
  readonly kind: "counter" | "gauge" | "histogram";
  /** Counters: the increment; gauges: the value now; histograms: one observation. */
  readonly value: number;
  readonly labels: Readonly<Record<string, string>>;
}

/**
 * Receives every measurement as it happens (synchronously, on the worker's thread: keep it
 * cheap; an exception it throws is swallowed). Off by default.
 *
 * @example
 * ```ts
 * import client from "prom-client";
 * const counters = new Map<string, client.Counter>();
 * const worker = await connectWorker({
 *   coordinators, group, nodeId,
 *   metrics: (m) => {
 *     if (m.kind !== "counter") return;
 *     let c = counters.get(m.name);
 *     if (c === undefined) {
 *       c = new client.Counter({ name: m.name, help: m.name, labelNames: Object.keys(m.labels) });
 *       counters.set(m.name, c);
 *     }
 *     c.inc(m.labels, m.value);
 *   },
 * });
 * ```
 */
export type WorkerMetricsHook = (metric: WorkerMetric) => void;

const none: Readonly<Record<string, string>> = Object.freeze({});

/**
 * The measurements one event stands for (pure: `running` is the number of shard handlers
 * running after the event, kept by the caller).
 */
export function metricsOfEvent(e: WorkerEventBody, running: number): WorkerMetric[] {
  const counter = (name: string, labels = none): WorkerMetric => ({
    name,
    kind: "counter",
    value: 1,
    labels,
  });
  switch (e.type) {
    case "connected":
      return [counter("shard_worker_connects_total")];
    case "disconnected":
      return [counter("shard_worker_disconnects_total", { code: e.code })];
    case "stale_view":
      return [counter("shard_worker_stale_views_total", { reason: e.reason })];
    case "fenced":
      return [counter("shard_worker_fenced_total")];
    case "assignment":
      return [
        { name: "shard_worker_assignment_version", kind: "gauge", value: e.assignment.version, labels: none },
      ];
    case "shard_started":
    case "shard_stopped":
      return [{ name: "shard_worker_running_shards", kind: "gauge", value: running, labels: none }];
    case "task_started":
      return [counter("shard_worker_tasks_started_total")];
    case "task_finished":
      return [counter("shard_worker_tasks_finished_total", { state: e.state })];
    default:
      return [];
  }
}
