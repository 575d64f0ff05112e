import { describe, expect, it } from "vitest";
import { runCli, startCluster, startWorker } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// `coordinator tasks ...` against real replicas (found from the election keys in etcd), with
// an SDK worker running the tasks. runCli never blocks this process, so the worker keeps
// heartbeating while the CLI runs.
const env = useTestEnv(1);

function json(stdout: string): Record<string, unknown>[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("coordinator tasks", () => {
  it("submit --wait, get, list, cancel of a queued task, watch --until-final", async () => {
    const c = await startCluster(env);
    await c.waitForLeader();
    const w = await startWorker(env, c, "cli-w", "tc1", { labels: { zone: "a" } });
    void w.runTasks(async (task) => `echo:${new TextDecoder().decode(task.payload)}:${task.attempt}`);
    const ns = c.namespace;

    const submitted = await runCli(env, ns, [
      "tasks",
      "submit",
      "--group",
      "tc1",
      "--id",
      "hello",
      "--payload",
      "world",
      "--wait",
    ]);
    expect(submitted.stderr).toBe("");
    expect(submitted.code).toBe(0);
    expect(json(submitted.stdout)).toMatchObject([
      { id: "hello", state: "succeeded", attempt: 1, worker: "cli-w", result: "echo:world:1", created: true },
    ]);

    const got = await runCli(env, ns, ["tasks", "get", "--group", "tc1", "--id", "hello"]);
    expect(json(got.stdout)).toMatchObject([{ id: "hello", state: "succeeded", result: "echo:world:1" }]);

    // No worker carries zone=b: the task stays queued until cancelled.
    const parked = await runCli(env, ns, [
      "tasks",
      "submit",
      "--group",
      "tc1",
      "--id",
      "parked",
      "--selector",
      "zone=b",
      "--priority",
      "1",
    ]);
    expect(json(parked.stdout)).toMatchObject([
      { id: "parked", state: "queued", priority: 1, selector: { zone: "b" } },
    ]);

    const queued = await runCli(env, ns, ["tasks", "list", "--group", "tc1", "--state", "queued"]);
    expect(queued.stdout.trim().split("\n")).toEqual(["parked\tqueued\tattempt=0/3\tworker=-"]);
    const all = await runCli(env, ns, ["tasks", "list", "--group", "tc1", "--json"]);
    expect(
      json(all.stdout)
        .map((t) => t.id)
        .sort(),
    ).toEqual(["hello", "parked"]);

    const cancelled = await runCli(env, ns, ["tasks", "cancel", "--group", "tc1", "--id", "parked"]);
    expect(json(cancelled.stdout)).toMatchObject([{ id: "parked", state: "cancelled" }]);

    const watched = await runCli(env, ns, [
      "tasks",
      "watch",
      "--group",
      "tc1",
      "--id",
      "hello",
      "parked",
      "--until-final",
    ]);
    expect(watched.code).toBe(0);
    const states = new Map(json(watched.stdout).map((t) => [t.id, t.state]));
    expect(states).toEqual(
      new Map([
        ["hello", "succeeded"],
        ["parked", "cancelled"],
      ]),
    );

    const status = await runCli(env, ns, ["status"]);
    expect(status.stdout).toContain(
      "  tasks: queued 0, dispatched 0, succeeded 1, failed 0, cancelled 1 (running ones show as dispatched)",
    );

    const missing = await runCli(env, ns, ["tasks", "get", "--group", "tc1", "--id", "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/NOT_FOUND/);
    const bad = await runCli(env, ns, ["tasks", "submit", "--group", "tc1", "--placement", "nowhere"]);
    expect(bad.code).toBe(2);
  });
});
