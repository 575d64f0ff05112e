import { describe, expect, it } from "vitest";
import type { Shard, WorkerEventBody } from "./worker-event.js";
import { metricsOfEvent } from "./worker-metrics.js";

describe("metricsOfEvent", () => {
  it("maps each event to its Prometheus-named measurements", () => {
    const shard: Shard = { id: 1, totalShards: 4, version: 3 };
    const cases: [WorkerEventBody, number, unknown[]][] = [
      [
        { type: "connected", coordinator: "a", leaderEpoch: 7, resumed: false, incarnation: 1 },
        0,
        [{ name: "shard_worker_connects_total", kind: "counter", value: 1, labels: {} }],
      ],
      [
        {
          type: "disconnected",
          coordinator: "a",
          code: "UNAVAILABLE",
          message: "m",
          reason: "r",
          welcomed: true,
          leader: undefined,
        },
        0,
        [
          {
            name: "shard_worker_disconnects_total",
            kind: "counter",
            value: 1,
            labels: { code: "UNAVAILABLE" },
          },
        ],
      ],
      [
        {
          type: "stale_view",
          coordinator: "a",
          reason: "stale_epoch",
          leaderEpoch: 1,
          version: 2,
          seenEpoch: 3,
          actedVersion: 4,
        },
        0,
        [
          {
            name: "shard_worker_stale_views_total",
            kind: "counter",
            value: 1,
            labels: { reason: "stale_epoch" },
          },
        ],
      ],
      [{ type: "fenced" }, 0, [{ name: "shard_worker_fenced_total", kind: "counter", value: 1, labels: {} }]],
      [
        { type: "shard_started", shard },
        2,
        [{ name: "shard_worker_running_shards", kind: "gauge", value: 2, labels: {} }],
      ],
      [
        { type: "shard_stopped", shard },
        1,
        [{ name: "shard_worker_running_shards", kind: "gauge", value: 1, labels: {} }],
      ],
      [
        { type: "task_started", taskId: "t", attempt: 1 },
        0,
        [{ name: "shard_worker_tasks_started_total", kind: "counter", value: 1, labels: {} }],
      ],
      [
        { type: "task_finished", taskId: "t", attempt: 1, state: "failed" },
        0,
        [
          {
            name: "shard_worker_tasks_finished_total",
            kind: "counter",
            value: 1,
            labels: { state: "failed" },
          },
        ],
      ],
      [{ type: "released", version: 3 }, 0, []],
    ];
    for (const [event, running, want] of cases) expect(metricsOfEvent(event, running)).toEqual(want);
  });

  it("names follow Prometheus conventions: counters end in _total, the histogram has its unit", () => {
    const names = new Set<string>();
    const kinds = new Map<string, string>();
    const shard: Shard = { id: 0, totalShards: 1, version: 1 };
    const events: WorkerEventBody[] = [
      { type: "connected", coordinator: "a", leaderEpoch: 1, resumed: true, incarnation: 1 },
      { type: "fenced" },
      { type: "shard_started", shard },
      { type: "task_started", taskId: "t", attempt: 1 },
      { type: "task_finished", taskId: "t", attempt: 1, state: "succeeded" },
    ];
    for (const e of events)
      for (const m of metricsOfEvent(e, 1)) {
        names.add(m.name);
        kinds.set(m.name, m.kind);
      }
    for (const n of names) {
      expect(n).toMatch(/^shard_worker_[a-z_]+$/);
      expect(kinds.get(n) === "counter").toBe(n.endsWith("_total"));
    }
  });
});
