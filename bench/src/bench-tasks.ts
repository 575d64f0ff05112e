import { connectWorker, createTaskClient, type TaskClient, type Worker } from "@org/worker-sdk";
import type { Reporter, Row } from "./report.js";
import { round, summarize } from "./stats.js";
import { RmCluster, startEtcd } from "./targets.js";

const FLAGS = ["--heartbeat-interval", "1000", "--session-timeout", "5000"] as const;
const WORKERS = 4;
const SLOTS = 8;

/** Start latencies (handler start - submit, wall clock of this one machine) and completions. */
interface Tally {
  readonly startMs: number[];
  done: number;
  want: number;
  resolve?: () => void;
}

function workerHandler(tally: Tally) {
  return async (task: { createdAtMs: number }) => {
    tally.startMs.push(Date.now() - task.createdAtMs);
    // No-op: the figure is the coordinator's path, not the handler's.
    tally.done += 1;
    if (tally.done >= tally.want) tally.resolve?.();
    return undefined;
  };
}

/** Waits until every one of `ids` is succeeded (the leader's record, through WatchTasks). */
async function allSucceeded(tc: TaskClient, group: string, n: number, signal: AbortSignal): Promise<number> {
  const seen = new Set<string>();
  for await (const e of tc.watch(group, { signal })) {
    if (e.type !== "task") continue;
    if (e.task.state === "succeeded") seen.add(e.task.id);
    if (seen.size >= n) return performance.now();
  }
  throw new Error("watch ended early");
}

/** Submits `n` no-op tasks as fast as batches of 200 (4 in flight) go: tasks/s end to end. */
async function throughput(rep: Reporter, tc: TaskClient, tally: Tally, n: number): Promise<Row> {
  const group = "bench-tasks";
  tally.startMs.length = 0;
  tally.done = 0;
  tally.want = n;
  const ac = new AbortController();
  const t0 = performance.now();
  const finished = allSucceeded(tc, group, n, ac.signal);
  rep.progress(`tasks: submitting ${n} no-op tasks`);
  let next = 0;
  const submitter = async () => {
    while (next < n) {
      const from = next;
      next = Math.min(n, next + 200);
      await tc.submit(
        group,
        Array.from({ length: next - from }, (_, i) => ({ id: `tp-${from + i}` })),
      );
    }
  };
  await Promise.all([submitter(), submitter(), submitter(), submitter()]);
  const submittedAt = performance.now();
  const t1 = await finished;
  ac.abort();
  const s = summarize(tally.startMs);
  return {
    measurement: `${n} tasks, submitted at once`,
    "submit s": round((submittedAt - t0) / 1000, 2),
    "end-to-end s": round((t1 - t0) / 1000, 2),
    "tasks/s": Math.round(n / ((t1 - t0) / 1000)),
    "submit->start p50 ms": Math.round(s.p50),
    "submit->start p99 ms": Math.round(s.p99),
  };
}

/** Submits at `rate` tasks/s (batches every 20 ms) for `seconds`: submit->start latency. */
async function latencyAt(
  rep: Reporter,
  tc: TaskClient,
  tally: Tally,
  rate: number,
  seconds: number,
): Promise<Row> {
  const group = "bench-tasks";
  tally.startMs.length = 0;
  tally.done = 0;
  const n = rate * seconds;
  tally.want = n;
  const done = new Promise<void>((resolve) => {
    tally.resolve = resolve;
  });
  rep.progress(`tasks: ${rate} tasks/s for ${seconds} s`);
  const perTick = Math.max(1, Math.round(rate / 50));
  const t0 = performance.now();
  const inflight: Promise<unknown>[] = [];
  let sent = 0;
  while (sent < n) {
    const due = Math.min(n, Math.floor(((performance.now() - t0) / 1000) * rate) + perTick);
    if (due > sent) {
      const from = sent;
      sent = due;
      inflight.push(
        tc.submit(
          group,
          Array.from({ length: sent - from }, (_, i) => ({ id: `tr${rate}-${from + i}` })),
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(inflight);
  const submitS = (performance.now() - t0) / 1000;
  await done;
  const endS = (performance.now() - t0) / 1000;
  const s = summarize(tally.startMs);
  return {
    // The offered rate; when the submits could not keep up, "tasks/s" (achieved) says so.
    measurement: `${n} tasks offered at ${rate}/s`,
    "submit s": round(submitS, 2),
    "end-to-end s": round(endS, 2),
    "tasks/s": Math.round(n / endS),
    "submit->start p50 ms": Math.round(s.p50),
    "submit->start p99 ms": Math.round(s.p99),
  };
}

export async function benchTasks(rep: Reporter, smoke: boolean): Promise<void> {
  await using etcd = await startEtcd();
  await using cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 1, args: FLAGS });
  await cluster.waitForLeader();
  const tally: Tally = { startMs: [], done: 0, want: Number.POSITIVE_INFINITY };
  const workers: Worker[] = [];
  const tc = createTaskClient({ coordinators: cluster.addresses });
  try {
    for (let i = 0; i < WORKERS; i++) {
      const w = await connectWorker({
        coordinators: cluster.addresses,
        group: "bench-tasks",
        nodeId: `bt-${i}`,
        capacity: SLOTS,
      });
      void w.runTasks(workerHandler(tally));
      workers.push(w);
    }
    const rows: Row[] = [];
    rows.push(await throughput(rep, tc, tally, smoke ? 200 : 2000));
    for (const rate of smoke ? [50] : [100, 500])
      rows.push(await latencyAt(rep, tc, tally, rate, smoke ? 2 : 5));
    rep.table({
      measurement: "tasks",
      title: "Tasks end to end: TaskClient.submit -> SDK worker runTasks (no-op) -> succeeded",
      settings: {
        flags: FLAGS.join(" "),
        etcd: "1 member",
        replicas: 1,
        workers: `${WORKERS} in the bench process, ${SLOTS} slots each`,
      },
      rows,
      notes: [
        "submit->start: the handler's Date.now() minus the task's createdAt (the leader's clock at submit; one machine).",
        "end-to-end: from the first submit until WatchTasks showed every task succeeded (offered rates: until the last handler ran); tasks/s = tasks / end-to-end.",
      ],
    });
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await tc.close();
    // SIGTERM first: a replica run with RM_CPU_PROF writes its profile only on a clean exit.
    await Promise.all(cluster.replicas.map((r) => r.stop()));
  }
}
