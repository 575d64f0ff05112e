import { createTaskClient, TaskError } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// The leader's task metrics, scraped from a live replica's /metrics after real tasks ran on
// an SDK worker: counters per group, the start latency histogram and the queue gauge.
const env = useTestEnv(1);

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, name: string, labels: string): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const [series, value] = [line.slice(0, line.lastIndexOf(" ")), line.slice(line.lastIndexOf(" ") + 1)];
    if (labels.split(",").every((l) => series.includes(l))) return Number(value);
  }
  return undefined;
}

describe("task metrics", () => {
  it("count submits, dispatches, finals and start latency per group; the gauge shows the queue", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = await startWorker(env, c, "m-1", "tm", { capacity: 4 });
    const done = w.runTasks(async (task) => {
      if (task.id === "bad") throw new TaskError("failed", "permanent", { retryable: false });
      return "ok";
    });
    const tc = createTaskClient({ coordinators: c.addresses });
    env.cleanup(() => tc.close());
    const ids = ["a", "b", "c", "d", "e", "bad"];
    await tc.submit(
      "tm",
      ids.map((id) => ({ id, payload: id })),
    );
    const finals = await Promise.all(ids.map((id) => tc.wait("tm", id)));
    expect(finals.filter((f) => f.state === "succeeded")).toHaveLength(5);
    expect(finals.find((f) => f.id === "bad")?.state).toBe("failed");
    // Queued for a group whose only worker is gone: the gauge shows it.
    await w.close();
    await done;
    await tc.submit("tm", [{ id: "late", payload: "x" }]);
    const g = 'group="tm"';
    const text = await until(
      async () => (await fetch(`${leader.httpUrl}/metrics`)).text(),
      (t) => sample(t, "shard_tasks", `${g},state="queued"`) === 1,
      10_000,
    );
    expect(sample(text, "shard_tasks_submitted_total", g)).toBe(7);
    expect(sample(text, "shard_tasks_dispatched_total", g)).toBe(6);
    expect(sample(text, "shard_tasks_succeeded_total", g)).toBe(5);
    expect(sample(text, "shard_tasks_failed_total", g)).toBe(1);
    expect(sample(text, "shard_task_start_latency_seconds_count", g)).toBe(6);
    expect(sample(text, "shard_task_start_latency_seconds_sum", g)).toBeGreaterThan(0);
  });
});
