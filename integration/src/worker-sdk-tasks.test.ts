import {
  createTaskClient,
  shardOf,
  type Task,
  type TaskClient,
  TaskError,
  type Worker,
} from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { runCli, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import type { RmCluster } from "./support/rm-cluster.js";
import { TaskWorkerProcess } from "./support/task-worker-process.js";
import { useTestEnv } from "./support/test-env.js";

// Tasks end to end with the SDK on both sides: a TaskClient submits to real replicas, SDK
// workers (in this process, or real processes for SIGKILL) run them with worker.runTasks.
// Every handler records its start and end with one clock (Date.now in this process, or the
// worker process's lines), so overlapping attempts would show.
const env = useTestEnv(3);

function client(c: RmCluster): TaskClient {
  const t = createTaskClient({ coordinators: c.addresses });
  env.cleanup(() => t.close());
  return t;
}

interface Run {
  readonly node: string;
  readonly id: string;
  readonly attempt: number;
  readonly start: number;
  end?: number;
  outcome?: string;
}

/** A handler that works `ms` (abortably) and records each attempt in `runs`. */
function recording(node: string, runs: Run[], ms: number) {
  return async (task: Task, signal: AbortSignal): Promise<string> => {
    const run: Run = { node, id: task.id, attempt: task.attempt, start: Date.now() };
    runs.push(run);
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, ms);
        signal.addEventListener(
          "abort",
          () => {
            clearTimeout(t);
            reject(signal.reason);
          },
          { once: true },
        );
      });
      run.outcome = "succeeded";
      return `${node}:${task.id}:${task.attempt}`;
    } catch (e) {
      run.outcome = e instanceof TaskError ? e.code : String(e);
      throw e;
    } finally {
      run.end = Date.now();
    }
  };
}

/** Pairs of runs of one task that overlap in time (a run without an end is still running). */
function overlaps(runs: readonly Run[]): [Run, Run][] {
  const out: [Run, Run][] = [];
  for (const a of runs)
    for (const b of runs)
      if (a !== b && a.id === b.id && a.start <= b.start && (a.end === undefined || a.end > b.start))
        out.push([a, b]);
  return out;
}

describe("SDK workers run tasks (worker.runTasks)", () => {
  it("submit -> runs on an SDK worker -> result via get and watch; never more at once than its slots", async () => {
    const c = await startCluster(env);
    const w = await startWorker(env, c, "w-1", "st1", { capacity: 2 });
    let now = 0;
    let most = 0;
    const runs: Run[] = [];
    const timed = recording("w-1", runs, 300);
    const done = w.runTasks(async (task, signal) => {
      now += 1;
      most = Math.max(most, now);
      try {
        task.progress(0.5, "half");
        return await timed(task, signal);
      } finally {
        now -= 1;
      }
    });
    const tc = client(c);
    const seen: string[] = [];
    const watching = (async () => {
      for await (const e of tc.watch("st1", { ids: ["t0"] })) {
        if (e.type !== "task") continue;
        seen.push(e.task.state);
        if (e.task.state === "succeeded") return e.task;
      }
      return undefined;
    })();
    const ids = Array.from({ length: 8 }, (_, i) => `t${i}`);
    await tc.submit(
      "st1",
      ids.map((id) => ({ id, payload: id })),
    );
    const finals = await Promise.all(ids.map((id) => tc.wait("st1", id)));
    for (const f of finals) {
      expect(f.state).toBe("succeeded");
      expect(f.attempt).toBe(1);
      expect(new TextDecoder().decode(f.result)).toBe(`w-1:${f.id}:1`);
    }
    const got = await tc.get("st1", "t3");
    expect(new TextDecoder().decode(got.result)).toBe("w-1:t3:1");
    const watched = await watching;
    expect(watched?.state).toBe("succeeded");
    expect(seen.at(-1)).toBe("succeeded");
    // Capacity 2: two at once (8 tasks of 300 ms), never three.
    expect(most).toBe(2);
    expect(runs).toHaveLength(8);
    await w.close();
    await done;
  });

  it("cancel of a running task aborts its handler's signal (code cancelled) and ends it cancelled", async () => {
    const c = await startCluster(env);
    const w = await startWorker(env, c, "w-c", "st2");
    const runs: Run[] = [];
    void w.runTasks(recording("w-c", runs, 60_000));
    const tc = client(c);
    await tc.submit("st2", { id: "long" });
    await until(
      () => tc.get("st2", "long").then((t) => t.state),
      (s) => s === "running",
    );
    await tc.cancel("st2", "long");
    const final = await tc.wait("st2", "long");
    expect(final.state).toBe("cancelled");
    expect(runs).toHaveLength(1);
    expect(runs[0]?.outcome).toBe("cancelled");
    expect(runs[0]?.end).toBeDefined();
  });

  it("a worker closed mid-task: its task runs again elsewhere as attempt 2, only after the first handler returned", async () => {
    const c = await startCluster(env);
    const runs: Run[] = [];
    const a = await startWorker(env, c, "a-1", "st3");
    void a.runTasks(recording("a-1", runs, 60_000));
    const tc = client(c);
    await tc.submit("st3", { id: "job" });
    await until(
      () => runs.length,
      (n) => n === 1,
    );
    const b = await startWorker(env, c, "b-1", "st3");
    void b.runTasks(recording("b-1", runs, 200));
    await a.close();
    const final = await tc.wait("st3", "job");
    expect(final.state).toBe("succeeded");
    expect(final.attempt).toBe(2);
    expect(runs.map((r) => [r.node, r.attempt, r.outcome])).toEqual([
      ["a-1", 1, "closed"],
      ["b-1", 2, "succeeded"],
    ]);
    expect(overlaps(runs)).toEqual([]);
  });

  it("a worker SIGKILLed mid-task: attempt 2 starts on another worker only after the dead one's session ran out", async () => {
    const c = await startCluster(env);
    const dead = new TaskWorkerProcess({ node: "k-1", group: "st4", coordinators: c.addresses });
    env.cleanup(() => dead.kill());
    await dead.waitFor((e) => e.event === "connected");
    const tc = client(c);
    await tc.submit("st4", { id: "job", payload: "60000" });
    await dead.waitFor((e) => e.event === "task_start");
    const runs: Run[] = [];
    const other = await startWorker(env, c, "k-2", "st4");
    void other.runTasks(recording("k-2", runs, 200));
    const killedAt = Date.now();
    await dead.kill();
    const final = await tc.wait("st4", "job");
    expect(final.state).toBe("succeeded");
    expect(final.attempt).toBe(2);
    expect(new TextDecoder().decode(final.result)).toBe("k-2:job:2");
    expect(dead.events.filter((e) => e.event === "task_start").map((e) => e.attempt)).toEqual([1]);
    expect(runs.map((r) => r.attempt)).toEqual([2]);
    const second = runs[0]?.start ?? 0;
    // The dead worker ran attempt 1 until the kill; the leader waited out its session
    // (5 s from its last heartbeat, sent at most one 500 ms interval before the kill).
    expect(second).toBeGreaterThan(killedAt);
    expect(second - killedAt).toBeGreaterThanOrEqual(4500);
  });

  it("leader SIGKILL mid-task: every task finishes once (same or next attempt), none lost, no overlap", async () => {
    const c = await startCluster(env);
    const runs: Run[] = [];
    const workers: Worker[] = [];
    for (const n of ["l-1", "l-2"]) {
      const w = await startWorker(env, c, n, "st5", { capacity: 2 });
      void w.runTasks(recording(n, runs, 2500));
      workers.push(w);
    }
    const tc = client(c);
    const ids = Array.from({ length: 6 }, (_, i) => `f${i}`);
    await tc.submit(
      "st5",
      ids.map((id) => ({ id })),
    );
    await until(
      () => runs.length,
      (n) => n >= 4,
    );
    const leader = await c.waitForLeader();
    await leader.kill();
    const finals = await Promise.all(
      ids.map((id) =>
        until(
          () => tc.get("st5", id),
          (t) => t.state === "succeeded" || t.state === "failed" || t.state === "cancelled",
          40_000,
        ),
      ),
    );
    for (const f of finals) {
      expect(f.state).toBe("succeeded");
      expect(f.attempt).toBeGreaterThanOrEqual(1);
      expect(f.attempt).toBeLessThanOrEqual(2);
      const mine = runs.filter((r) => r.id === f.id);
      // The attempt that succeeded is the one recorded; each attempt ran at most once.
      expect(new Set(mine.map((r) => r.attempt)).size).toBe(mine.length);
      expect(mine.some((r) => r.attempt === f.attempt && r.outcome === "succeeded")).toBe(true);
    }
    expect(overlaps(runs)).toEqual([]);
    for (const w of workers) expect(w.taskSlots).toBe(2);
  });

  it("shard placement: a task whose shard moves to a joining worker is aborted (shard_lost) and runs there next; the others go on", async () => {
    const c = await startCluster(env, ["--strategy", "sticky", "--shards", "8"]);
    const runs: Run[] = [];
    const finish = Promise.withResolvers<void>();
    const handler = (node: string) => async (task: Task, signal: AbortSignal) => {
      const run: Run = { node, id: task.id, attempt: task.attempt, start: Date.now() };
      runs.push(run);
      try {
        await new Promise<void>((resolve, reject) => {
          void finish.promise.then(resolve);
          signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        });
        run.outcome = "succeeded";
        return `${node}:${task.attempt}`;
      } catch (e) {
        run.outcome = e instanceof TaskError ? e.code : String(e);
        throw e;
      } finally {
        run.end = Date.now();
      }
    };
    const a = await startWorker(env, c, "sa", "st6", { capacity: 8 });
    void a.runShards(async (_s, signal) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
    });
    void a.runTasks(handler("sa"));
    await until(
      () => a.assignment,
      (x) => x.phase === "active" && x.running.length === 8,
    );
    const tc = client(c);
    const ids = Array.from({ length: 8 }, (_, i) => `job-${i}`);
    await tc.submit(
      "st6",
      ids.map((id) => ({ id, placement: "shard" as const })),
    );
    await until(
      () => runs.length,
      (n) => n === 8,
    );
    const b = await startWorker(env, c, "sb", "st6", { capacity: 8 });
    void b.runShards(async (_s, signal) => {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
    });
    void b.runTasks(handler("sb"));
    await until(
      () => b.assignment,
      (x) => x.phase === "active" && x.running.length > 0,
      20_000,
    );
    const moved = ids.filter((id) => b.assignment.shards.includes(shardOf(id, 8)));
    const stayed = ids.filter((id) => !moved.includes(id));
    expect(moved.length).toBeGreaterThan(0);
    expect(stayed.length).toBeGreaterThan(0);
    await until(
      () => runs.filter((r) => r.node === "sb").length,
      (n) => n === moved.length,
      20_000,
    );
    finish.resolve();
    const finals = await Promise.all(ids.map((id) => tc.wait("st6", id)));
    for (const f of finals) {
      expect(f.state).toBe("succeeded");
      const expected = moved.includes(f.id) ? "sb:2" : "sa:1";
      expect(new TextDecoder().decode(f.result)).toBe(expected);
    }
    for (const id of moved)
      expect(runs.filter((r) => r.id === id).map((r) => [r.node, r.attempt, r.outcome])).toEqual([
        ["sa", 1, "shard_lost"],
        ["sb", 2, "succeeded"],
      ]);
    for (const id of stayed)
      expect(runs.filter((r) => r.id === id).map((r) => [r.node, r.attempt, r.outcome])).toEqual([
        ["sa", 1, "succeeded"],
      ]);
    expect(overlaps(runs)).toEqual([]);
  });

  it("an operator's capacity override becomes the worker's task slots (capacity_changed); drain is surfaced (drain_requested)", async () => {
    const c = await startCluster(env);
    const w = await startWorker(env, c, "op-1", "st7", { capacity: 1 });
    const events: string[] = [];
    void (async () => {
      for await (const e of w.events())
        if (e.type === "capacity_changed" || e.type === "drain_requested") events.push(`${e.type}`);
    })();
    let now = 0;
    let most = 0;
    const runs: Run[] = [];
    const timed = recording("op-1", runs, 400);
    void w.runTasks(async (task, signal) => {
      now += 1;
      most = Math.max(most, now);
      try {
        return await timed(task, signal);
      } finally {
        now -= 1;
      }
    });
    const set = await runCli(env, c.namespace, [
      "capacity",
      "--group",
      "st7",
      "--node",
      "op-1",
      "--set",
      "3",
    ]);
    expect(set.code).toBe(0);
    await until(
      () => w.taskSlots,
      (n) => n === 3,
    );
    expect(events).toEqual(["capacity_changed"]);
    const tc = client(c);
    const ids = Array.from({ length: 9 }, (_, i) => `c${i}`);
    await tc.submit(
      "st7",
      ids.map((id) => ({ id })),
    );
    const finals = await Promise.all(ids.map((id) => tc.wait("st7", id)));
    expect(finals.every((f) => f.state === "succeeded")).toBe(true);
    expect(most).toBe(3);
    const drain = await runCli(env, c.namespace, ["drain", "--group", "st7", "--node", "op-1"]);
    expect(drain.code).toBe(0);
    await until(
      () => events.length,
      (n) => n === 2,
    );
    expect(events).toEqual(["capacity_changed", "drain_requested"]);
  });

  it("an operator's group pause and resume reach the SDK worker as paused/resumed events; no task runs while paused", async () => {
    const c = await startCluster(env);
    const w = await startWorker(env, c, "pz-1", "st8");
    const events: string[] = [];
    void (async () => {
      for await (const e of w.events()) if (e.type === "paused" || e.type === "resumed") events.push(e.type);
    })();
    const started: string[] = [];
    void w.runTasks(async (task) => {
      started.push(task.id);
      return "ok";
    });
    const pause = await runCli(env, c.namespace, ["group", "pause", "--group", "st8"]);
    expect(pause.code, pause.stderr).toBe(0);
    await until(
      () => events.length,
      (n) => n === 1,
    );
    expect(events).toEqual(["paused"]);
    const tc = client(c);
    await tc.submit("st8", [{ id: "p1" }]);
    await new Promise((r) => setTimeout(r, 1500));
    expect(started).toEqual([]);
    expect((await tc.get("st8", "p1")).state).toBe("queued");
    const resume = await runCli(env, c.namespace, ["group", "resume", "--group", "st8"]);
    expect(resume.code, resume.stderr).toBe(0);
    expect((await tc.wait("st8", "p1")).state).toBe("succeeded");
    expect(events).toEqual(["paused", "resumed"]);
  });
});
