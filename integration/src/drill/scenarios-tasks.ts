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
  /** The attempts (`task#attempt`) the leader still had in flight on the victim right after the fault. */
  readonly unreported?: ReadonlySet<string>;
}

interface StormContext {
  readonly env: DrillEnvironment;
  readonly first: readonly TaskWorkerProcess[];
  spawn(node: string): TaskWorkerProcess;
  /** Resolves once `n` task runs succeeded in all. */
  waitSucceeded(n: number): Promise<void>;
  /** A first-generation worker with an attempt in flight (waits up to 30 s for one). */
  busyWorker(): Promise<TaskWorkerProcess>;
  /**
   * The attempts the leader has in flight (dispatched or running) on `node`, read 250 ms
   * after a fault stopped it, so reports already on the wire have landed: the attempts
   * whose outcome the leader never got.
   */
  leaderInFlight(node: string): Promise<Set<string>>;
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
      async leaderInFlight(node) {
        await sleep(250);
        const out = new Set<string>();
        for (const state of ["dispatched", "running"] as const) {
          let pageToken = "";
          do {
            const page = await tc.list(group, { state, pageSize: 500, pageToken });
            for (const t of page.tasks) if (t.worker === node) out.add(`${t.id}#${t.attempt}`);
            pageToken = page.nextPageToken;
          } while (pageToken !== "");
        }
        return out;
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
    const a = taskAccounting(
      lines,
      states,
      f.killed ? new Map([[f.victim, f.at]]) : new Map(),
      f.unreported === undefined ? new Map() : new Map([[f.victim, f.unreported]]),
    );
    // The fault -> each of the victim's in-flight tasks started elsewhere: the slowest of them.
    const restarts = [...new Set([...f.inFlight, ...(f.unreported ?? [])])].map(
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
        unreportedOnVictim: f.unreported?.size ?? null,
        migrationMs,
      },
    };
  } finally {
    await tc.close();
    await Promise.all(workers.map((w) => w.kill()));
  }
}

/**
 * Cancels and timeouts under a storm: 300 tasks on three task workers, interleaved: 100 of
 * 200 ms (must succeed), 100 of 3 s with a 400 ms timeout and 2 attempts (each attempt must
 * be cancelled by the leader and end on its worker, the second starting only after the
 * first stopped; then failed with reason timeout), and 100 of 3 s that the drill cancels
 * (the first 20 while queued, the rest as soon as their worker says they started; each must
 * end cancelled, its handler stopped). Then: every task in the state its kind calls for, no
 * two attempts of one task overlapping, no attempt left running on a live worker.
 */
async function cancelTimeoutStorm(env: DrillEnvironment): Promise<ScenarioResult> {
  const workers = ["tw-0", "tw-1", "tw-2"].map(
    (node) => new TaskWorkerProcess({ node, group, coordinators: env.rm.addresses, capacity: 4 }),
  );
  const tc = createTaskClient({ coordinators: env.rm.addresses });
  const problems: string[] = [];
  const per = tasks / 3;
  const timeoutMs = 400;
  const id = (kind: string, i: number) => `${kind}-${String(i).padStart(3, "0")}`;
  try {
    await Promise.all(workers.map((w) => w.waitFor((e) => e.event === "connected", 60_000)));
    const specs = Array.from({ length: per }, (_, i) => [
      { id: id("ok", i), payload: "200", maxAttempts: 10 },
      { id: id("slow", i), payload: "3000", timeoutMs, maxAttempts: 2 },
      { id: id("cancel", i), payload: "3000", maxAttempts: 10 },
    ]).flat();
    for (let i = 0; i < specs.length; i += 100) await tc.submit(group, specs.slice(i, i + 100));
    // Cancel each "cancel" task: the first 20 at once (most still queued), the others once a
    // worker printed their start. Each cancel's time, to measure cancel -> handler stopped.
    const cancelledAt = new Map<string, number>();
    const cancel = async (taskId: string) => {
      cancelledAt.set(taskId, Date.now());
      await tc.cancel(group, taskId, { reason: "drill" });
    };
    await Promise.all(Array.from({ length: 20 }, (_, i) => cancel(id("cancel", i))));
    const lines = () => workers.flatMap((w) => w.events);
    let finals = new Map<string, string>();
    const deadline = Date.now() + 120_000;
    for (;;) {
      const started = lines().filter(
        (l) => l.event === "task_start" && l.task?.startsWith("cancel-") === true && !cancelledAt.has(l.task),
      );
      await Promise.all(started.map((l) => cancel(l.task ?? "")));
      finals = await finalStates(tc);
      if (finals.size >= tasks || Date.now() > deadline) break;
      await sleep(100);
    }
    const want = (taskId: string) =>
      taskId.startsWith("ok-") ? "succeeded" : taskId.startsWith("slow-") ? "failed" : "cancelled";
    const ids = specs.map((t) => t.id);
    const wrong = ids.filter((t) => finals.get(t) !== want(t));
    if (wrong.length > 0)
      problems.push(
        `${wrong.length} of ${tasks} tasks are not in their expected final state, e.g. ${wrong
          .slice(0, 5)
          .map((t) => `${t}: ${finals.get(t) ?? "unfinished"}`)
          .join("; ")}`,
      );
    // The states are checked above; the accounting is for overlaps and open attempts (a
    // cancelled or timed-out handler that never stopped).
    const all = lines();
    const a = taskAccounting(all, new Map(ids.map((t) => [t, "succeeded"])), new Map());
    if (a.attemptOverlaps > 0) problems.push(`${a.attemptOverlaps} pairs of attempts of one task overlapped`);
    if (a.openAttempts > 0) problems.push(`${a.openAttempts} attempts never ended on a live worker`);
    if (a.unexplainedDuplicates > 0)
      problems.push(`${a.unexplainedDuplicates} tasks ran again after a run that was not cut short`);
    // Timeouts: each slow task ran its 2 attempts, each aborted; the reason says timeout.
    const slowRuns = a.spans.filter((r) => r.task.startsWith("slow-"));
    const notTwo = ids
      .filter((t) => t.startsWith("slow-"))
      .filter((t) => slowRuns.filter((r) => r.task === t).length !== 2);
    if (notTwo.length > 0)
      problems.push(
        `${notTwo.length} timed-out tasks did not run exactly 2 attempts, e.g. ${notTwo.slice(0, 3).join(", ")}`,
      );
    const completedSlow = slowRuns.filter((r) => r.outcome !== "aborted");
    if (completedSlow.length > 0)
      problems.push(`${completedSlow.length} attempts of timed-out tasks were not aborted`);
    const sample = await tc.get(group, id("slow", 0));
    if (sample.error?.reason !== "timeout")
      problems.push(`${sample.id} failed with reason ${sample.error?.reason ?? "none"}, not timeout`);
    // An attempt's run past its timeout: its last work minus its start, less the timeout.
    const overrun = slowRuns.map((r) => r.end - r.start - timeoutMs).sort((x, y) => x - y);
    // Cancel -> the handler's end line (the worker stopped it), for tasks that had started.
    const stops = all
      .filter((l) => l.event === "task_end" && l.task?.startsWith("cancel-") === true)
      .map((l) => l.t - (cancelledAt.get(l.task ?? "") ?? Number.NaN))
      .filter((ms) => Number.isFinite(ms) && ms >= 0)
      .sort((x, y) => x - y);
    const pct = (xs: number[], p: number) =>
      xs.length === 0 ? null : (xs[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? null);
    return {
      workersAlive: true,
      expectSameVersion: true,
      handlersMayRestart: true,
      problems,
      measured: {
        tasks,
        tasksLost: ids.filter((t) => !["succeeded", "failed", "cancelled"].includes(finals.get(t) ?? ""))
          .length,
        attemptOverlaps: a.attemptOverlaps,
        duplicateAttempts: a.duplicateAttempts,
        cancelledRunning: stops.length,
        cancelToStopP50Ms: pct(stops, 0.5),
        cancelToStopMaxMs: stops.at(-1) ?? null,
        timeoutOverrunP50Ms: pct(overrun, 0.5),
        timeoutOverrunMaxMs: overrun.at(-1) ?? null,
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
        const unreported = await ctx.leaderInFlight(victim.node);
        ctx.spawn("tw-3");
        // Every line it printed has been read once it is gone: what it ran when it died.
        return { victim: victim.node, at, inFlight: running(victim), killed: true, failoverMs, unreported };
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
        // Also lets the lines it wrote before the stop reach us.
        const unreported = await ctx.leaderInFlight(victim.node);
        const inFlight = running(victim);
        // Its fence runs out, the leader expels it and gives its tasks to the others; when
        // it wakes up it must not do one more step of them (task.valid()).
        await sleep(drillTiming.sessionTimeoutMs + 2000);
        victim.signal("SIGCONT");
        return { victim: victim.node, at, inFlight, killed: false, unreported };
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
  {
    name: "task-cancel-timeout",
    description:
      "300 tasks: a third succeed, a third time out (2 attempts each), a third cancelled queued or running",
    run: cancelTimeoutStorm,
  },
];
