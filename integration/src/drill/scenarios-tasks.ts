import { createTaskClient, type TaskClient, type TaskState } from "@org/worker-sdk";
import { findEtcdLeader } from "../harness/etcd-leader.js";
import { TaskWorkerProcess } from "../support/task-worker-process.js";
import { type DrillEnvironment, drillTiming } from "./environment.js";
import { sleep, timeNewLeader } from "./scenario-helpers.js";
import type { Scenario, ScenarioResult } from "./scenarios.js";
import { taskAccounting } from "./task-accounting.js";

const group = "drill-tasks";
const tasks = 300;

/** Final states of the group's tasks, by id (paged ListTasks per final state). */
async function finalStates(tc: TaskClient): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const state of ["succeeded", "failed", "cancelled"] as const satisfies readonly TaskState[]) {
    let pageToken = "";
    do {
      const page = await tc.list(group, { state, pageSize: 500, pageToken });
      for (const t of page.tasks) out.set(t.id, t.state);
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }
  return out;
}

/** Attempts a task worker started and has not ended (`task#attempt`). */
function running(w: TaskWorkerProcess): Set<string> {
  const ended = new Set(
    w.events.filter((e) => e.event === "task_end").map((e) => `${e.task ?? ""}#${e.attempt ?? 0}`),
  );
  return new Set(
    w.events
      .filter((e) => e.event === "task_start")
      .map((e) => `${e.task ?? ""}#${e.attempt ?? 0}`)
      .filter((k) => !ended.has(k)),
  );
}

/** What a storm's fault did: the worker it hit (none: ""), when, and what that worker had in flight. */
interface StormFault {
  readonly victim: string;
  readonly at: number;
  readonly inFlight: ReadonlySet<string>;
  readonly killed: boolean;
  readonly failoverMs?: number;
}

interface StormContext {
  readonly env: DrillEnvironment;
  readonly first: readonly TaskWorkerProcess[];
  spawn(node: string): TaskWorkerProcess;
  /** Resolves once `n` task runs succeeded in all. */
  waitSucceeded(n: number): Promise<void>;
  /** A first-generation worker with an attempt in flight (waits up to 30 s for one). */
  busyWorker(): Promise<TaskWorkerProcess>;
}

/**
 * 300 tasks (`taskMs` each) on three task-worker processes (4 slots each, beside the drill's
 * dataset workers), `fault` applied while they run; then every task must succeed, no two
 * attempts of one task may overlap in time, and a task may run twice only when an earlier
 * run was cut short by a kill.
 */
async function storm(
  env: DrillEnvironment,
  taskMs: number,
  fault: (ctx: StormContext) => Promise<StormFault>,
): Promise<ScenarioResult> {
  const workers: TaskWorkerProcess[] = [];
  const spawn = (node: string) => {
    const w = new TaskWorkerProcess({ node, group, coordinators: env.rm.addresses, capacity: 4 });
    workers.push(w);
    return w;
  };
  const tc = createTaskClient({ coordinators: env.rm.addresses });
  const problems: string[] = [];
  try {
    const first = ["tw-0", "tw-1", "tw-2"].map(spawn);
    await Promise.all(first.map((w) => w.waitFor((e) => e.event === "connected", 60_000)));
    const ids = Array.from({ length: tasks }, (_, i) => `storm-${String(i).padStart(3, "0")}`);
    for (let i = 0; i < ids.length; i += 100)
      await tc.submit(
        group,
        ids.slice(i, i + 100).map((id) => ({ id, payload: String(taskMs), maxAttempts: 10 })),
      );
    const succeeded = () =>
      workers.reduce(
        (n, w) => n + w.events.filter((e) => e.event === "task_end" && e.outcome === "succeeded").length,
        0,
      );
    const f = await fault({
      env,
      first,
      spawn,
      async waitSucceeded(n) {
        const deadline = Date.now() + 60_000;
        while (succeeded() < n) {
          if (Date.now() > deadline)
            throw new Error(`only ${succeeded()} of ${n} task runs succeeded in 60 s`);
          await sleep(20);
        }
      },
      async busyWorker() {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const w = first.find((x) => x.running && running(x).size > 0);
          if (w !== undefined) return w;
          if (Date.now() > deadline) throw new Error("no task worker had an attempt in flight within 30 s");
          await sleep(5);
        }
      },
    });
    // Every task final (or the deadline).
    let finals = new Map<string, string>();
    const deadline = Date.now() + 90_000;
    for (;;) {
      finals = await finalStates(tc);
      if (finals.size >= tasks || Date.now() > deadline) break;
      await sleep(500);
    }
    const states = new Map(ids.map((id) => [id, finals.get(id) ?? "unfinished"]));
    const lines = workers.flatMap((w) => w.events);
    const a = taskAccounting(lines, states, f.killed ? new Map([[f.victim, f.at]]) : new Map());
    // The fault -> each of the victim's in-flight tasks started elsewhere: the slowest of them.
    const restarts = [...f.inFlight].map(
      (k) =>
        lines.find(
          (l) => l.event === "task_start" && l.task === k.slice(0, k.lastIndexOf("#")) && l.node !== f.victim,
        )?.t ?? Number.NaN,
    );
    const migrationMs = restarts.length === 0 ? null : Math.max(...restarts) - f.at;
    if (a.tasksLost > 0) {
      const unfinished = ids.filter((id) => states.get(id) !== "succeeded").slice(0, 5);
      const seen = await Promise.all(
        unfinished.map((id) =>
          tc.get(group, id).then(
            (t) => `${id}: ${t.state} attempt ${t.attempt} on ${t.worker ?? "-"}`,
            (e: unknown) => `${id}: ${String(e)}`,
          ),
        ),
      );
      problems.push(`${a.tasksLost} of ${tasks} tasks did not succeed, e.g. ${seen.join("; ")}`);
    }
    if (a.attemptOverlaps > 0) problems.push(`${a.attemptOverlaps} pairs of attempts of one task overlapped`);
    if (a.unexplainedDuplicates > 0)
      problems.push(
        `${a.unexplainedDuplicates} tasks ran again after a run that was not cut short, e.g. ${a.unexplained
          .slice(0, 3)
          .map(
            (r) =>
              `${r.task} attempt ${r.attempt} on ${r.node} ${r.outcome} at ${r.end}${
                f.killed && r.node === f.victim ? ` (${f.at - r.end} ms before that worker's SIGKILL)` : ""
              }`,
          )
          .join("; ")}`,
      );
    if (a.openAttempts > 0) problems.push(`${a.openAttempts} attempts never ended on a live worker`);
    if (migrationMs !== null && !Number.isFinite(migrationMs))
      problems.push("a task in flight on the victim never started elsewhere");
    return {
      ...(f.failoverMs === undefined ? {} : { failoverMs: f.failoverMs }),
      workersAlive: true,
      expectSameVersion: true,
      // The storm's four extra processes load the 2 cores: a failover may then outlast a
      // dataset worker's fence (it stops and restarts its shard, which I1/I2 still check).
      // That failovers stay within the fence is leader-kill's check, on an unloaded run.
      handlersMayRestart: true,
      problems,
      measured: {
        tasks,
        tasksLost: a.tasksLost,
        attemptOverlaps: a.attemptOverlaps,
        duplicateAttempts: a.duplicateAttempts,
        inFlightOnVictim: f.inFlight.size,
        migrationMs,
      },
    };
  } finally {
    await tc.close();
    await Promise.all(workers.map((w) => w.kill()));
  }
}

export const taskScenarios: readonly Scenario[] = [
  {
    name: "task-storm",
    description: "300 tasks on SDK task workers through a leader SIGKILL and a task worker SIGKILL",
    run: (env) =>
      storm(env, 200, async (ctx) => {
        await ctx.waitSucceeded(tasks / 4);
        const leader = await env.rm.waitForLeader();
        const t0 = Date.now();
        await leader.kill();
        const failoverMs = await timeNewLeader(env, leader, t0);
        await ctx.waitSucceeded(tasks / 2);
        // Killing an idle worker would test nothing.
        const victim = await ctx.busyWorker();
        const at = Date.now();
        await victim.kill();
        ctx.spawn("tw-3");
        // Every line it printed has been read once it is gone: what it ran when it died.
        return { victim: victim.node, at, inFlight: running(victim), killed: true, failoverMs };
      }),
  },
  {
    name: "task-worker-pause",
    description: "a task worker with attempts in flight SIGSTOPped past the session timeout, then SIGCONT",
    run: (env) =>
      storm(env, 400, async (ctx) => {
        await ctx.waitSucceeded(tasks / 4);
        const victim = await ctx.busyWorker();
        const at = Date.now();
        victim.signal("SIGSTOP");
        await sleep(100); // the lines it wrote before the stop reach us
        const inFlight = running(victim);
        // Its fence runs out, the leader expels it and gives its tasks to the others; when
        // it wakes up it must not do one more step of them (task.valid()).
        await sleep(drillTiming.sessionTimeoutMs + 2000);
        victim.signal("SIGCONT");
        return { victim: victim.node, at, inFlight, killed: false };
      }),
  },
  {
    name: "task-leader-term",
    description: "300 tasks on SDK task workers through a leader SIGTERM (it resigns at once)",
    run: (env) =>
      storm(env, 200, async (ctx) => {
        await ctx.waitSucceeded(tasks / 4);
        const leader = await env.rm.waitForLeader();
        const at = Date.now();
        const exited = leader.stop();
        const failoverMs = await timeNewLeader(env, leader, at);
        await exited;
        return { victim: "", at, inFlight: new Set<string>(), killed: false, failoverMs };
      }),
  },
  {
    name: "task-etcd-leader-kill",
    description: "300 tasks on SDK task workers through a SIGKILL of the etcd raft leader (restarted later)",
    run: (env) =>
      storm(env, 200, async (ctx) => {
        await ctx.waitSucceeded(tasks / 4);
        const victim = await findEtcdLeader(env.etcd.members);
        const at = Date.now();
        await victim.kill();
        await findEtcdLeader(env.etcd.members.filter((m) => m !== victim));
        await sleep(drillTiming.sessionTimeoutMs);
        await victim.restart();
        return { victim: "", at, inFlight: new Set<string>(), killed: false };
      }),
  },
];
