import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  CommandKind,
  ControlCommandSchema,
  type TaskDispatch,
  TaskDispatchSchema,
  TaskPlacement,
  TaskState,
  type TaskUpdate,
  TaskUpdateSchema,
} from "@org/proto";
import { describe, expect, it } from "vitest";
import type { Outbound, WelcomeInfo } from "./session-runner.js";
import { TaskError } from "./task-error.js";
import type { Task } from "./task-handler.js";
import { TaskRunner } from "./task-runner.js";
import type { ShardStanding } from "./task-slots.js";
import { EventHub } from "./worker-event.js";

// The task runner against a fake session port and shard lookup: what it reports, when it
// starts handlers, and what aborts them. The end-to-end path runs in
// integration/src/worker-sdk-tasks.test.ts against real replicas.

const view = {
  leaderEpoch: 1,
  version: 1,
  phase: "active" as const,
  totalShards: 4,
  shards: [0],
  strategy: "",
};
const welcome = (newIncarnation = false): WelcomeInfo => ({
  coordinator: "c",
  leaderEpoch: 1,
  resumed: !newIncarnation,
  incarnation: 1,
  newIncarnation,
});

function dispatch(
  id: string,
  extra: Omit<MessageInitShape<typeof TaskDispatchSchema>, "$typeName"> = {},
): TaskDispatch {
  return create(TaskDispatchSchema, {
    taskId: id,
    attempt: 1,
    leaderEpoch: 7n,
    payload: new TextEncoder().encode(id),
    placement: TaskPlacement.BALANCED,
    maxAttempts: 3,
    priority: 3,
    ...extra,
  });
}

function setup(slots = 2) {
  const sent: TaskUpdate[] = [];
  const shards = new Map<number, ShardStanding>();
  const port = {
    send(kind: Outbound) {
      if (kind?.case === "taskUpdate") sent.push(create(TaskUpdateSchema, kind.value));
    },
  };
  const hub = new EventHub(() => undefined, {});
  const fence = { holds: true };
  const runner: TaskRunner = new TaskRunner(
    {
      slots,
      handlerGraceMs: 100,
      fenceHolds: () => {
        if (!fence.holds) runner.fenced(0);
        return fence.holds;
      },
    },
    hub,
    port,
    {
      // The test's task ids name their shard: "s<n>".
      standing: (id) => shards.get(Number(id.slice(1))) ?? "wait",
    },
  );
  runner.welcomed(welcome(), 0);
  runner.confirmed(0);
  const finals = (id: string) => sent.filter((u) => u.taskId === id && u.state !== TaskState.RUNNING);
  return { runner, sent, shards, finals, fence };
}

/** A handler whose attempts the test ends by hand. */
function gate() {
  const started: Task[] = [];
  const ends = new Map<string, PromiseWithResolvers<string>>();
  let concurrent = 0;
  let maxConcurrent = 0;
  const handler = async (task: Task, signal: AbortSignal) => {
    concurrent += 1;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    started.push(task);
    const end = Promise.withResolvers<string>();
    ends.set(task.id, end);
    signal.addEventListener("abort", () => end.reject(signal.reason), { once: true });
    try {
      return await end.promise;
    } finally {
      concurrent -= 1;
    }
  };
  return { handler, started, ends, max: () => maxConcurrent };
}

const settle = () => new Promise((r) => setTimeout(r, 5));

describe("TaskRunner", () => {
  it("runs a task and reports running then succeeded with the attempt and epoch echoed", async () => {
    const { runner, sent } = setup();
    void runner.run(async (t) => `done ${new TextDecoder().decode(t.payload)}`);
    runner.task(dispatch("a", { attempt: 2 }));
    await settle();
    expect(sent.map((u) => [u.state, u.attempt, u.leaderEpoch])).toEqual([
      [TaskState.RUNNING, 2, 7n],
      [TaskState.SUCCEEDED, 2, 7n],
    ]);
    expect(new TextDecoder().decode(sent[1]?.result)).toBe("done a");
    runner.close(undefined);
  });

  it("reports a thrown error as failed, retryable unless a TaskError says otherwise", async () => {
    const { runner, finals } = setup();
    void runner.run(async (t) => {
      if (t.id === "x") throw new Error("boom");
      throw new TaskError("failed", "bad input", { retryable: false });
    });
    runner.task(dispatch("x"));
    runner.task(dispatch("y"));
    await settle();
    expect(finals("x")[0]).toMatchObject({ state: TaskState.FAILED, message: "boom", retryable: true });
    expect(finals("y")[0]).toMatchObject({ state: TaskState.FAILED, message: "bad input", retryable: false });
  });

  it("never runs more than its slots; the rest wait FIFO and start as slots free", async () => {
    const { runner } = setup(2);
    const g = gate();
    void runner.run(g.handler);
    for (const id of ["a", "b", "c", "d"]) runner.task(dispatch(id));
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b"]);
    expect(runner.heartbeatLoad()).toEqual({ runningTasks: 2, queueLength: 2 });
    g.ends.get("a")?.resolve("ok");
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b", "c"]);
    expect(g.max()).toBe(2);
  });

  it("SET_CAPACITY changes the slots; an aborted handler keeps its slot until it returns", async () => {
    const { runner } = setup(1);
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("a"));
    runner.task(dispatch("b"));
    runner.task(dispatch("c"));
    await settle();
    expect(
      runner.command(create(ControlCommandSchema, { kind: CommandKind.SET_CAPACITY, capacity: 3 })),
    ).toMatchObject({
      ok: true,
    });
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b", "c"]);
    runner.command(create(ControlCommandSchema, { kind: CommandKind.SET_CAPACITY, capacity: 1 }));
    runner.task(dispatch("d"));
    g.ends.get("a")?.resolve("ok");
    g.ends.get("b")?.resolve("ok");
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b", "c"]); // c still holds the one slot
    g.ends.get("c")?.resolve("ok");
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b", "c", "d"]);
    expect(g.max()).toBe(3);
  });

  it("CANCEL_TASK aborts the matching attempt's signal and reports cancelled", async () => {
    const { runner, finals } = setup();
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("a", { attempt: 3 }));
    await settle();
    const other = runner.command(
      create(ControlCommandSchema, { kind: CommandKind.CANCEL_TASK, taskId: "a", attempt: 2, reason: "old" }),
    );
    expect(other).toEqual({ ok: true, message: "not running here" });
    expect(g.started[0]?.signal.aborted).toBe(false);
    runner.command(
      create(ControlCommandSchema, {
        kind: CommandKind.CANCEL_TASK,
        taskId: "a",
        attempt: 3,
        reason: "by a client",
      }),
    );
    expect(g.started[0]?.signal.reason).toMatchObject({ name: "TaskError", code: "cancelled" });
    await settle();
    expect(finals("a")).toMatchObject([{ state: TaskState.CANCELLED, attempt: 3, message: "by a client" }]);
  });

  it("aborts every handler when fenced, and starts nothing until confirmed again", async () => {
    const { runner, finals } = setup();
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("a"));
    await settle();
    runner.fenced(0);
    expect(g.started[0]?.signal.reason).toMatchObject({ code: "fenced" });
    runner.task(dispatch("b"));
    await settle();
    expect(finals("a")).toMatchObject([{ state: TaskState.CANCELLED }]);
    expect(g.started.map((t) => t.id)).toEqual(["a"]);
    runner.confirmed(1);
    await settle();
    expect(g.started.map((t) => t.id)).toEqual(["a", "b"]);
  });

  it("task.valid() checks the fence synchronously and aborts the signal when it ran out", async () => {
    const { runner, fence, finals } = setup();
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("a"));
    await settle();
    const t = g.started[0];
    expect(t?.valid()).toBe(true);
    fence.holds = false;
    expect(t?.valid()).toBe(false);
    expect(t?.signal.reason).toMatchObject({ code: "fenced" });
    await settle();
    expect(finals("a")).toMatchObject([{ state: TaskState.CANCELLED }]);
  });

  it("lists held and unrecorded tasks for Hello, resends finals on resume, drops all on a new incarnation", async () => {
    const { runner, sent } = setup(1);
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("a"));
    runner.task(dispatch("b"));
    await settle();
    g.ends.get("a")?.resolve("ok");
    await settle();
    // a finished (not yet confirmed as delivered), b runs.
    expect(runner.heldTaskIds().sort()).toEqual(["a", "b"]);
    const before = sent.length;
    runner.welcomed(welcome(), 1);
    expect(sent.slice(before).map((u) => [u.taskId, u.state])).toEqual([
      ["a", TaskState.SUCCEEDED],
      ["b", TaskState.RUNNING],
    ]);
    // Acks, however many and however late, are not enough: the leader may not have written
    // it (its write may have failed). Only the leader's word that it is recorded is.
    for (let i = 0; i < 5; i++) runner.confirmed(performance.now() + i * 1000);
    runner.confirmed(performance.now() + 60_000);
    expect(runner.heldTaskIds().sort()).toEqual(["a", "b"]);
    runner.recorded([{ taskId: "a", attempt: 2 }]); // another attempt's report: kept
    expect(runner.heldTaskIds().sort()).toEqual(["a", "b"]);
    runner.recorded([{ taskId: "a", attempt: 1 }]);
    expect(runner.heldTaskIds()).toEqual(["b"]);
    runner.welcomed(welcome(true), 4);
    expect(g.started[1]?.signal.reason).toMatchObject({ code: "new_incarnation" });
    await settle();
    runner.welcomed(welcome(true), 5);
    expect(runner.heldTaskIds()).toEqual([]);
  });

  it("aborts a shard-placed task when its shard stops running; gives back one whose shard is lost", async () => {
    const { runner, shards, finals } = setup(4);
    const g = gate();
    void runner.run(g.handler);
    shards.set(0, "runs");
    shards.set(1, "wait");
    runner.task(dispatch("s0", { placement: TaskPlacement.SHARD, shardId: 0, shardVersion: 1n }));
    runner.task(dispatch("s1", { placement: TaskPlacement.SHARD, shardId: 1, shardVersion: 1n }));
    await settle();
    expect(g.started.map((t) => [t.id, t.shardId, t.placement])).toEqual([["s0", 0, "shard"]]);
    shards.set(0, "wait");
    shards.set(1, "lost");
    runner.view(view, 1, false);
    expect(g.started[0]?.signal.reason).toMatchObject({ code: "shard_lost" });
    await settle();
    expect(finals("s0")).toMatchObject([{ state: TaskState.CANCELLED }]);
    expect(finals("s1")).toMatchObject([
      { state: TaskState.CANCELLED, message: "shard 1 is not owned here" },
    ]);
  });

  it("aborts at the attempt's timeout, sends progress at most every tick, drains on close", async () => {
    const { runner, sent, finals } = setup();
    const g = gate();
    void runner.run(g.handler);
    runner.task(dispatch("t", { timeoutMs: 1 }));
    runner.task(dispatch("p"));
    await settle();
    const p = g.started.find((t) => t.id === "p");
    p?.progress(0.2);
    p?.progress(0.5, "half");
    runner.tick(performance.now());
    expect(g.started.find((t) => t.id === "t")?.signal.reason).toMatchObject({ code: "timeout" });
    expect(sent.filter((u) => u.taskId === "p" && u.progress > 0)).toMatchObject([
      { state: TaskState.RUNNING, progress: 0.5, message: "half" },
    ]);
    runner.task(dispatch("q"));
    runner.command(create(ControlCommandSchema, { kind: CommandKind.SET_CAPACITY, capacity: 0 }));
    runner.retire();
    expect(p?.signal.reason).toMatchObject({ code: "closed" });
    await runner.idle();
    expect(finals("p")).toMatchObject([{ state: TaskState.CANCELLED, message: "the worker is closing" }]);
    expect(finals("t")).toMatchObject([{ state: TaskState.CANCELLED }]);
    runner.task(dispatch("late"));
    expect(finals("late")).toMatchObject([{ state: TaskState.CANCELLED }]);
  });

  it("gives a dispatch back when no handler was registered within the grace", async () => {
    const { runner, finals } = setup();
    runner.task(dispatch("a"));
    runner.tick(performance.now());
    expect(finals("a")).toEqual([]);
    await new Promise((r) => setTimeout(r, 110));
    runner.tick(performance.now());
    expect(finals("a")).toMatchObject([{ state: TaskState.CANCELLED }]);
  });

  it("acks DRAIN and answers undefined for commands it does not handle", () => {
    const { runner } = setup();
    expect(runner.command(create(ControlCommandSchema, { kind: CommandKind.DRAIN }))).toMatchObject({
      ok: true,
    });
    expect(runner.command(create(ControlCommandSchema, { kind: CommandKind.PAUSE }))).toBeUndefined();
  });
});
