import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { MemoryTaskStore } from "./memory-task-store.js";
import { TaskBoard, type TaskBoardOptions } from "./task-board.js";
import type { TaskSubmission, WatchBatch } from "./task-host.js";
import { resolveTaskOptions, type TaskOptionsInput } from "./task-options.js";
import type { TaskRecord } from "./task-record.js";

const log = pino({ level: "silent" });
const never = new AbortController().signal;

function board(
  store = new MemoryTaskStore(),
  over: TaskOptionsInput = {},
  extra: Partial<TaskBoardOptions> = {},
): { b: TaskBoard; store: MemoryTaskStore; waiting: string[]; cancels: TaskRecord[] } {
  const waiting: string[] = [];
  const cancels: TaskRecord[] = [];
  const b = new TaskBoard({
    persistence: store,
    epoch: 3,
    options: resolveTaskOptions(over),
    log,
    onWaiting: (g) => waiting.push(g),
    onCancel: (_g, r) => cancels.push(r),
    ...extra,
  });
  return { b, store, waiting, cancels };
}

const spec = (id: string | undefined, payload = "p", over: Partial<TaskSubmission> = {}): TaskSubmission => ({
  id,
  payload: new TextEncoder().encode(payload),
  placement: "balanced",
  selector: {},
  priority: 3,
  maxAttempts: 3,
  timeoutMs: 0,
  ...over,
});

async function stored(store: MemoryTaskStore, id: string): Promise<TaskRecord | undefined> {
  return (await store.read("g", [id])).get(id)?.record;
}

describe("TaskBoard submit", () => {
  it("lets one of two concurrent submits of a new id create it; the other gets the same task", async () => {
    const { b } = board();
    for (let i = 0; i < 10; i++) {
      const [x, y] = await Promise.all([
        b.submit("g", [spec(`a${i}`)], never),
        b.submit("g", [spec(`a${i}`)], never),
      ]);
      expect([x[0]?.created, y[0]?.created].sort()).toEqual([false, true]);
      expect(x[0]?.task.record.seq).toBe(y[0]?.task.record.seq);
    }
    const z = await Promise.allSettled([
      b.submit("g", [spec("c", "1")], never),
      b.submit("g", [spec("c", "2")], never),
    ]);
    expect(z.map((r) => r.status).sort()).toEqual(["fulfilled", "rejected"]);
    const rejected = z.find((r) => r.status === "rejected");
    expect(rejected?.status === "rejected" && rejected.reason).toMatchObject({ code: "already_exists" });
  });

  it("finds a finished task that left memory in the store, and compares its payload", async () => {
    const { b } = board(undefined, { recentFinished: 0 });
    await b.submit("g", [spec("old")], never);
    await b.cancel("g", "old", "test", never);
    expect(b.loaded("g")?.get("old")).toBeUndefined();
    const again = await b.submit("g", [spec("old")], never);
    expect(again[0]).toMatchObject({ created: false, task: { record: { state: "cancelled" } } });
    await expect(b.submit("g", [spec("old", "other")], never)).rejects.toMatchObject({
      code: "already_exists",
    });
    expect((await b.get("g", "old", never)).record.state).toBe("cancelled");
  });

  it("tells the dispatcher when a group has new waiting tasks", async () => {
    const { b, waiting } = board();
    await b.submit("g", [spec(undefined)], never);
    expect(waiting).toEqual(["g"]);
  });
});

describe("TaskBoard attempts", () => {
  it("drops reports of another worker or attempt and counts them", async () => {
    const { b } = board();
    await b.submit("g", [spec("t")], never);
    await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w1" }]);
    const wrong = await b.attempts.report("g", "t", { worker: "w2", attempt: 1, state: "succeeded" });
    const old = await b.attempts.report("g", "t", { worker: "w1", attempt: 0, state: "succeeded" });
    const unknown = await b.attempts.report("g", "nope", { worker: "w1", attempt: 1, state: "running" });
    expect([wrong, old, unknown].map((o) => (o.accepted ? "accepted" : o.reason))).toEqual([
      "wrong_worker",
      "stale_attempt",
      "unknown_task",
    ]);
    expect(b.stats.stale).toMatchObject({ wrong_worker: 1, stale_attempt: 1, unknown_task: 1 });
    expect((await b.get("g", "t", never)).record.state).toBe("dispatched");
  });

  it("requeues a lost worker's tasks with the next attempt, and fails them when attempts run out", async () => {
    const { b, store, waiting } = board();
    await b.submit("g", [spec("t", "p", { maxAttempts: 2 })], never);
    const [d1] = await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w1" }]);
    expect(new TextDecoder().decode(d1?.payload)).toBe("p");
    await b.attempts.workerLost("g", "w1", "expelled after the session timeout");
    expect(await stored(store, "t")).toMatchObject({
      state: "queued",
      attempt: 1,
      error: { reason: "worker_lost" },
    });
    expect(waiting.filter((g) => g === "g").length).toBeGreaterThanOrEqual(2);
    const [d2] = await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w2" }]);
    expect(d2?.record.attempt).toBe(2);
    // The first worker's late report is stale: it is not the current attempt's worker.
    expect(
      (await b.attempts.report("g", "t", { worker: "w1", attempt: 1, state: "succeeded" })).accepted,
    ).toBe(false);
    await b.attempts.workerLost("g", "w2", "gone");
    expect(await stored(store, "t")).toMatchObject({ state: "failed", attempt: 2 });
    expect(b.stats).toMatchObject({ dispatched: 2, requeued: 1, failed: 1 });
  });

  it("cancels a task in flight through its worker, durably", async () => {
    const { b, store, cancels } = board();
    await b.submit("g", [spec("t")], never);
    await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w1" }]);
    const v = await b.cancel("g", "t", "user", never);
    expect(v.record).toMatchObject({ state: "dispatched", cancelRequested: true });
    expect(await stored(store, "t")).toMatchObject({ cancelRequested: true });
    expect(cancels.map((r) => [r.id, r.worker, r.attempt])).toEqual([["t", "w1", 1]]);
    await b.attempts.report("g", "t", { worker: "w1", attempt: 1, state: "cancelled" });
    expect(await stored(store, "t")).toMatchObject({ state: "cancelled" });
  });

  it("fails a task for good when its result is over --max-task-bytes", async () => {
    const { b, store } = board(undefined, { maxTaskBytes: 4 });
    await b.submit("g", [spec("t", "1234")], never);
    await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w1" }]);
    await b.attempts.report("g", "t", {
      worker: "w1",
      attempt: 1,
      state: "succeeded",
      result: new Uint8Array(5),
    });
    expect(await stored(store, "t")).toMatchObject({ state: "failed", error: { retryable: false } });
  });

  it("lists attempts past their timeout", async () => {
    let now = 1_000_000;
    const { b } = board(undefined, {}, { now: () => now });
    await b.submit("g", [spec("t", "p", { timeoutMs: 100 }), spec("u")], never);
    await b.attempts.dispatch("g", [
      { taskId: "t", nodeId: "w1" },
      { taskId: "u", nodeId: "w1" },
    ]);
    expect(b.attempts.overdue("g")).toEqual([]);
    now += 100;
    expect(b.attempts.overdue("g").map((r) => r.id)).toEqual(["t"]);
  });

  it("serialises the changes of one task: a cancel racing a success leaves etcd and memory agreeing", async () => {
    for (let i = 0; i < 20; i++) {
      const { b, store } = board();
      await b.submit("g", [spec("t")], never);
      await b.attempts.dispatch("g", [{ taskId: "t", nodeId: "w1" }]);
      const [rep, can] = await Promise.allSettled([
        b.attempts.report("g", "t", { worker: "w1", attempt: 1, state: "succeeded" }),
        b.cancel("g", "t", "user", never),
      ]);
      expect(rep.status).toBe("fulfilled");
      if (can.status === "rejected") expect(can.reason).toMatchObject({ code: "failed_precondition" });
      expect(await stored(store, "t")).toEqual((await b.get("g", "t", never)).record);
      expect((await stored(store, "t"))?.state).toBe("succeeded");
    }
  });
});

describe("TaskBoard after a failover", () => {
  it("loads unfinished tasks, keeps FIFO after them, and resumes an old leader's watch with what changed", async () => {
    const first = board();
    await first.b.submit("g", [spec("a"), spec("b"), spec("c")], never);
    const watcher = first.b.watch("g", { ids: [], cursor: "" }, never)[Symbol.asyncIterator]();
    const snap = (await watcher.next()).value as WatchBatch;
    expect(snap.synced).toBe(true);
    await watcher.return?.(undefined);
    await first.b.cancel("g", "a", "x", never);
    await first.b.close();

    const seconds = new TaskBoard({
      persistence: first.store,
      epoch: 4,
      options: resolveTaskOptions(),
      log,
    });
    await seconds.submit("g", [spec("d")], never);
    const lanes = [...(seconds.loaded("g")?.lanes() ?? [])];
    expect(lanes.flatMap((l) => [...l.tasks].map((t) => t.id))).toEqual(["b", "c", "d"]);
    // The old cursor is another epoch's: a snapshot of unfinished tasks, plus what changed
    // after its revision (the cancelled "a").
    const resumed = seconds.watch("g", { ids: [], cursor: snap.cursor }, never)[Symbol.asyncIterator]();
    const batch = (await resumed.next()).value as WatchBatch;
    expect(batch.synced).toBe(true);
    expect(batch.tasks.map((t) => `${t.record.id}:${t.record.state}`).sort()).toEqual([
      "a:cancelled",
      "b:queued",
      "c:queued",
      "d:queued",
    ]);
    await resumed.return?.(undefined);
    await seconds.close();
  });

  it("ends a watcher that falls too far behind with aborted", async () => {
    const { b } = board(undefined, { watchBufferLimit: 2 });
    const it = b.watch("g", { ids: [], cursor: "" }, never)[Symbol.asyncIterator]();
    await it.next();
    await b.submit("g", [spec("a"), spec("b"), spec("c")], never);
    await expect(it.next()).rejects.toMatchObject({ code: "aborted" });
  });
});
