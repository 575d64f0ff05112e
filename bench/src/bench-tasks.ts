import { startEtcdCluster } from "@org/integration/harness";
import { connectWorker, createTaskClient, type TaskClient, type Worker } from "@org/worker-sdk";
import { Etcd3, type IOperation } from "etcd3";
import { NodeChild } from "./children.js";
import { wallNow } from "./follow-worker.js";
import { cpuSeconds, rssBytes } from "./proc-stats.js";
import type { Reporter, Row } from "./report.js";
import { round, summarize } from "./stats.js";
import { RmCluster } from "./targets.js";

const SESSION_TIMEOUT_MS = 5000;
// --max-queued-tasks: room for the memory row's 100,000 waiting tasks.
const FLAGS = [
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  String(SESSION_TIMEOUT_MS),
  "--max-queued-tasks",
  "150000",
  ...(process.env.BENCH_TASK_FLAGS ? process.env.BENCH_TASK_FLAGS.split(" ") : []),
] as const;
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

/** Submits `n` empty tasks (`<prefix>-0`...) in batches of `batch`, 4 batches in flight. */
async function submitAll(
  tc: TaskClient,
  group: string,
  n: number,
  batch: number,
  prefix: string,
): Promise<void> {
  let next = 0;
  const submitter = async () => {
    while (next < n) {
      const from = next;
      next = Math.min(n, next + batch);
      await tc.submit(
        group,
        Array.from({ length: next - from }, (_, i) => ({ id: `${prefix}-${from + i}` })),
      );
    }
  };
  await Promise.all([submitter(), submitter(), submitter(), submitter()]);
}

/** Submits `n` no-op tasks as fast as batches of 200 (4 in flight) go: tasks/s end to end. */
async function throughput(
  rep: Reporter,
  tc: TaskClient,
  tally: Tally,
  n: number,
  leaderPid: number,
  etcdPids: readonly number[],
  leaderHttpUrl: string,
): Promise<{ row: Row; tasksPerS: number }> {
  // Fenced transactions the leader committed (its shard_etcd_writes_total counter).
  const txns = async () => {
    const text = await (await fetch(`${leaderHttpUrl}/metrics`)).text();
    const m = /^shard_etcd_writes_total(?:\{[^}]*\})? (\d+)$/m.exec(text);
    if (m?.[1] === undefined) throw new Error("shard_etcd_writes_total not exported");
    return Number(m[1]);
  };
  const txns0 = await txns();
  const group = "bench-tasks";
  const etcdCpu = () => etcdPids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const cpu0 = cpuSeconds(leaderPid);
  const etcd0 = etcdCpu();
  const own0 = process.cpuUsage();
  tally.startMs.length = 0;
  tally.done = 0;
  tally.want = n;
  const ac = new AbortController();
  const t0 = performance.now();
  const finished = allSucceeded(tc, group, n, ac.signal);
  rep.progress(`tasks: submitting ${n} no-op tasks`);
  await submitAll(tc, group, n, 200, "tp");
  const submittedAt = performance.now();
  const t1 = await finished;
  const cpu = cpuSeconds(leaderPid) - cpu0;
  const etcd = etcdCpu() - etcd0;
  const own = process.cpuUsage(own0);
  ac.abort();
  const txnCount = (await txns()) - txns0;
  const s = summarize(tally.startMs);
  const tasksPerS = n / ((t1 - t0) / 1000);
  return {
    tasksPerS,
    row: {
      measurement: `${n} tasks, submitted at once`,
      "submit s": round((submittedAt - t0) / 1000, 2),
      "end-to-end s": round((t1 - t0) / 1000, 2),
      "tasks/s": Math.round(tasksPerS),
      "submit->start p50 ms": Math.round(s.p50),
      "submit->start p99 ms": Math.round(s.p99),
      "leader CPU %": Math.round((100 * cpu) / ((t1 - t0) / 1000)),
      "etcd CPU %": Math.round((100 * etcd) / ((t1 - t0) / 1000)),
      "bench CPU %": Math.round((100 * ((own.user + own.system) / 1e6)) / ((t1 - t0) / 1000)),
      "etcd txns": txnCount,
      "CPU ms per task": round(((cpu + etcd + (own.user + own.system) / 1e6) * 1000) / n, 2),
    },
  };
}

/**
 * The ceiling the leader's task writes can reach on this etcd: the same transactions for `n`
 * tasks (a create puts the record and the payload, a dispatch the record, a final the record
 * on a lease and deletes the payload), each behind a compare like the leader's fence, packed
 * up to 128 operations per transaction with 4 in flight (the task store's defaults), sent
 * straight from etcd3 with no coordinator in between. Records are `recordBytes` long (a real
 * one's size, read back from the leader's run).
 */
async function bareCeiling(endpoints: readonly string[], n: number, recordBytes: number) {
  const client = new Etcd3({ hosts: [...endpoints] });
  const prefix = "/bench-ceiling";
  try {
    const fence = `${prefix}/fence`;
    await client.put(fence).value("x");
    const rev = (await client.get(fence).exec()).kvs[0]?.create_revision ?? "0";
    const lease = client.lease(3600, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    const record = "r".repeat(recordBytes);
    const key = (kind: string, i: number) => `${prefix}/${kind}/t-${i}`;
    const phases: ((i: number) => IOperation[])[] = [
      (i) => [client.put(key("tasks", i)).value(record), client.put(key("payloads", i)).value("")],
      (i) => [client.put(key("tasks", i)).value(record)],
      (i) => [
        client.put(key("tasks", i)).value(record).lease(leaseId),
        client.delete().key(key("payloads", i)),
      ],
    ];
    let txns = 0;
    const t0 = performance.now();
    for (const ops of phases) {
      const batches: IOperation[][] = [[]];
      for (let i = 0; i < n; i++) {
        const o = ops(i);
        let last = batches[batches.length - 1] as IOperation[];
        if (last.length + o.length > 128) {
          last = [];
          batches.push(last);
        }
        last.push(...o);
      }
      let next = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (next < batches.length) {
            const b = batches[next++] as IOperation[];
            const res = await client
              .if(fence, "Create", "==", rev)
              .then(...b)
              .commit();
            if (!res.succeeded) throw new Error("the ceiling's fence compare failed");
            txns += 1;
          }
        }),
      );
    }
    const s = (performance.now() - t0) / 1000;
    await client.delete().prefix(`${prefix}/`);
    await lease.revoke();
    return { tasksPerS: n / s, txns, seconds: s };
  } finally {
    client.close();
  }
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

/**
 * Balanced placement with mixed capacities: workers of 1, 1, 2, 2, 4 and 4 slots, tasks of
 * `taskMs` each offered at half the group's slot capacity. Each worker's utilisation is its
 * busy slot-time / (its slots x the run's length); the row gives max/mean over the workers
 * (1.0 is perfectly even), each capacity's mean, and the most tasks one worker ran at once
 * beyond its slots (must be 0).
 */
async function balance(rep: Reporter, coordinators: readonly string[], smoke: boolean): Promise<Row> {
  const group = "bench-balance";
  const caps = [1, 1, 2, 2, 4, 4];
  const taskMs = 50;
  const seconds = smoke ? 1 : 6;
  const slots = caps.reduce((a, b) => a + b, 0);
  const rate = Math.round((0.5 * slots * 1000) / taskMs);
  const n = rate * seconds;
  const stats = caps.map((cap) => ({ cap, running: 0, maxRunning: 0, busyMs: 0, lastAt: 0 }));
  let done = 0;
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  const { promise: allDone, resolve } = Promise.withResolvers<void>();
  const integrate = (w: (typeof stats)[number], now: number) => {
    w.busyMs += w.running * (now - w.lastAt);
    w.lastAt = now;
  };
  const workers: Worker[] = [];
  const tc = createTaskClient({ coordinators: [...coordinators] });
  try {
    for (const [i, w] of stats.entries()) {
      const worker = await connectWorker({
        coordinators: [...coordinators],
        group,
        nodeId: `bal-${i}-cap${w.cap}`,
        capacity: w.cap,
      });
      workers.push(worker);
      void worker.runTasks(async () => {
        const start = performance.now();
        if (start < first) first = start;
        integrate(w, start);
        w.running += 1;
        if (w.running > w.maxRunning) w.maxRunning = w.running;
        await new Promise((r) => setTimeout(r, taskMs));
        const end = performance.now();
        integrate(w, end);
        w.running -= 1;
        last = Math.max(last, end);
        done += 1;
        if (done >= n) resolve();
        return undefined;
      });
    }
    rep.progress(`tasks: balance, ${n} tasks of ${taskMs} ms at ${rate}/s on slots ${caps.join("/")}`);
    const t0 = performance.now();
    let sent = 0;
    const inflight: Promise<unknown>[] = [];
    while (sent < n) {
      const due = Math.min(n, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
      if (due > sent) {
        const from = sent;
        sent = due;
        inflight.push(
          tc.submit(
            group,
            Array.from({ length: sent - from }, (_, k) => ({ id: `bal-${from + k}` })),
          ),
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inflight);
    await allDone;
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await tc.close();
  }
  const span = last - first;
  const util = stats.map((w) => w.busyMs / (w.cap * span));
  const mean = util.reduce((a, b) => a + b, 0) / util.length;
  const byCap = (cap: number) => {
    const u = util.filter((_, i) => stats[i]?.cap === cap);
    return round(u.reduce((a, b) => a + b, 0) / u.length, 2);
  };
  return {
    measurement: `${n} tasks of ${taskMs} ms at ${rate}/s (half the slots)`,
    "max/mean utilisation": round(Math.max(...util) / mean, 2),
    "mean utilisation": round(mean, 2),
    "1-slot": byCap(1),
    "2-slot": byCap(2),
    "4-slot": byCap(4),
    "most over slots": Math.max(...stats.map((w) => w.maxRunning - w.cap)),
  };
}

/**
 * A dead worker's tasks running elsewhere: two worker processes of 4 slots, 4 long tasks
 * (placement spreads them), SIGKILL the one holding most; the figure is from the kill to the
 * last of its tasks starting on the other worker (its handler's start, one wall clock).
 */
async function migration(rep: Reporter, coordinators: readonly string[]): Promise<Row> {
  const group = "bench-migrate";
  const children = ["mig-a", "mig-b"].map(
    (id) => new NodeChild("task-worker-child.js", [coordinators.join(","), group, id, "4"]),
  );
  const tc = createTaskClient({ coordinators: [...coordinators] });
  try {
    await Promise.all(children.map((c) => c.waitFor("ready", 30_000)));
    await tc.submit(
      group,
      Array.from({ length: 4 }, (_, i) => ({ id: `mig-${i}`, payload: "120000" })),
    );
    const started = (c: NodeChild) => c.messages.filter((m) => m.t === "started");
    const deadline = performance.now() + 30_000;
    while (started(children[0] as NodeChild).length + started(children[1] as NodeChild).length < 4) {
      if (performance.now() > deadline) throw new Error("the 4 migration tasks did not all start");
      await new Promise((r) => setTimeout(r, 20));
    }
    const [victim, survivor] = (
      started(children[0] as NodeChild).length >= started(children[1] as NodeChild).length
        ? children
        : [...children].reverse()
    ) as [NodeChild, NodeChild];
    const moved = new Set(started(victim).map((m) => String(m.task)));
    rep.progress(`tasks: migration, SIGKILL a worker holding ${moved.size} of 4 tasks`);
    const killedAt = wallNow();
    await victim.kill();
    const again = () => started(survivor).filter((m) => moved.has(String(m.task)));
    while (again().length < moved.size) {
      if (wallNow() - killedAt > 60_000) throw new Error("the killed worker's tasks did not move");
      await new Promise((r) => setTimeout(r, 20));
    }
    const ms = Math.max(...again().map((m) => Number(m.at) - killedAt));
    return {
      measurement: `SIGKILL of a worker running ${moved.size} tasks`,
      "session timeout ms": SESSION_TIMEOUT_MS,
      "kill -> running elsewhere ms": Math.round(ms),
      "goal ms (timeout + 1 s)": SESSION_TIMEOUT_MS + 1000,
    };
  } finally {
    await Promise.all(children.map((c) => c.kill()));
    await tc.close();
  }
}

/** The leader's RSS growth with `n` waiting tasks (a group with no workers; empty payloads). */
async function queuedMemory(rep: Reporter, coordinators: readonly string[], leaderPid: number, n: number) {
  const group = "bench-queue";
  const tc = createTaskClient({ coordinators: [...coordinators] });
  try {
    const before = rssBytes(leaderPid);
    rep.progress(`tasks: queueing ${n} tasks with no worker`);
    const t0 = performance.now();
    await submitAll(tc, group, n, 500, "q");
    const s = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 1000));
    const after = rssBytes(leaderPid);
    return {
      measurement: `${n} queued tasks`,
      "submit s": round(s, 1),
      "submits/s": Math.round(n / s),
      "leader RSS before MiB": round(before / 2 ** 20, 1),
      "leader RSS after MiB": round(after / 2 ** 20, 1),
      "bytes per task": Math.round((after - before) / n),
    };
  } finally {
    await tc.close();
  }
}

export async function benchTasks(rep: Reporter, smoke: boolean): Promise<void> {
  await using etcd = await startEtcdCluster({ size: 3, name: "bench-tasks" });
  await using cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 1, args: FLAGS });
  const leader = await cluster.waitForLeader();
  const leaderPid = leader.pid;
  if (leaderPid === undefined) throw new Error("the leader has no pid");
  const tally: Tally = { startMs: [], done: 0, want: Number.POSITIVE_INFINITY };
  const workers: Worker[] = [];
  const tc = createTaskClient({ coordinators: cluster.addresses });
  const settings = {
    flags: FLAGS.join(" "),
    etcd: "3 members",
    replicas: 1,
  };
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
    const n = smoke ? 200 : 2000;
    const etcdPids = etcd.members.flatMap((m) => (m.pid === undefined ? [] : [m.pid]));
    const tp = await throughput(rep, tc, tally, n, leaderPid, etcdPids, leader.httpUrl);
    // A real record's size, for the ceiling's writes.
    const probe = new Etcd3({ hosts: [...etcd.endpoints] });
    const sample = await probe
      .get(`${cluster.namespace}/groups/bench-tasks/tasks/tp-0`)
      .string()
      .finally(() => probe.close());
    const recordBytes = Buffer.byteLength(sample ?? "");
    if (recordBytes === 0) throw new Error("no task record to size the ceiling's writes by");
    rep.progress(`tasks: bare etcd ceiling, ${n} tasks' transactions`);
    const ceiling = await bareCeiling(etcd.endpoints, n, recordBytes);
    const rows: Row[] = [
      tp.row,
      {
        measurement: `bare etcd3: the same ${n} tasks' transactions`,
        "end-to-end s": round(ceiling.seconds, 2),
        "tasks/s": Math.round(ceiling.tasksPerS),
        "etcd txns": ceiling.txns,
      },
      {
        measurement: "ratio: end to end / bare etcd",
        "tasks/s": round(tp.tasksPerS / ceiling.tasksPerS, 2),
      },
    ];
    for (const rate of smoke ? [50] : [100, 1000])
      rows.push(await latencyAt(rep, tc, tally, rate, smoke ? 2 : 5));
    rep.table({
      measurement: "tasks",
      title: "Tasks end to end: TaskClient.submit -> SDK worker runTasks (no-op) -> succeeded",
      settings: { ...settings, workers: `${WORKERS} in the bench process, ${SLOTS} slots each` },
      rows,
      notes: [
        "submit->start: the handler's Date.now() minus the task's createdAt (the leader's clock at submit; one machine).",
        "end-to-end: from the first submit until WatchTasks showed every task succeeded (offered rates: until the last handler ran); tasks/s = tasks / end-to-end.",
        `bare etcd3: a create (record + payload), a dispatch (record) and a final (record on a lease, payload deleted) per task, records of ${recordBytes} bytes as the leader wrote them, behind a fence compare, up to 128 operations per transaction and 4 in flight, as the task store batches.`,
        "leader CPU %: the leader process's CPU time over the run's wall time (100 = one core); etcd CPU %: the three members' together; bench CPU %: this process (the submitter, the watcher and the 4 SDK workers); etcd txns: fenced transactions the leader committed during the row (its shard_etcd_writes_total), or the bare client sent; CPU ms per task: the three summed, per task (the machine's 2 cores give 2,000 ms per second).",
      ],
    });
    rep.table({
      measurement: "tasks.balance",
      title:
        "Tasks: balanced placement with mixed capacities (utilisation = busy slot-time / slots x run time)",
      settings: { ...settings, workers: "6 in the bench process, slots 1/1/2/2/4/4" },
      rows: [await balance(rep, cluster.addresses, smoke)],
    });
    if (!smoke)
      rep.table({
        measurement: "tasks.migration",
        title: "Tasks: a dead worker's tasks running elsewhere",
        settings: { ...settings, workers: "2 processes (bench/dist/task-worker-child.js), 4 slots each" },
        rows: [await migration(rep, cluster.addresses)],
      });
    rep.table({
      measurement: "tasks.memory",
      title: "Tasks: leader memory with queued tasks",
      settings,
      rows: [await queuedMemory(rep, cluster.addresses, leaderPid, smoke ? 2000 : 100_000)],
    });
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await tc.close();
    // SIGTERM first: a replica run with RM_CPU_PROF writes its profile only on a clean exit.
    await Promise.all(cluster.replicas.map((r) => r.stop()));
  }
}
