import { shardOf } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dispatchTask, requestCancel, workerLost } from "./attempts.js";
import type { PlacementLane } from "./placement.js";
import { placeTasks } from "./placement.js";
import { TaskError } from "./task-error.js";
import { TaskQueue } from "./task-queue.js";
import { isFinalState, payloadDigest, type TaskRecord, taskStates } from "./task-record.js";

function record(id: string, over: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id,
    group: "g",
    state: "queued",
    attempt: 0,
    maxAttempts: 3,
    placement: "balanced",
    selector: {},
    priority: 3,
    timeoutMs: 0,
    worker: null,
    leaderEpoch: 1,
    payloadBytes: 0,
    payloadSha256: payloadDigest(new Uint8Array()),
    seq: 1,
    createdAt: new Date(0).toISOString(),
    updatedAt: new Date(0).toISOString(),
    ...over,
  };
}

const ctx = { nowMs: 1000, leaderEpoch: 2 };
const idsOf = (lane: PlacementLane) => [...lane.tasks].map((t) => t.id);
const queue = (over: Partial<ConstructorParameters<typeof TaskQueue>[0]> = {}) =>
  new TaskQueue({ group: "g", maxQueuedTasks: 1000, recentFinished: 100, ...over });

describe("TaskQueue", () => {
  it("orders a lane by priority, FIFO by seq, and puts a requeued task back in its place", () => {
    const q = queue();
    q.apply(record("a", { seq: 1 }));
    q.apply(record("b", { seq: 2, priority: 1 }));
    q.apply(record("c", { seq: 3 }));
    const [lane] = [...q.lanes()];
    expect(lane && idsOf(lane)).toEqual(["b", "a", "c"]);
    const d = dispatchTask(record("a", { seq: 1 }), "w1", ctx);
    q.apply(d);
    expect(q.onWorker("w1")).toEqual(["a"]);
    expect(lane && idsOf(lane)).toEqual(["b", "c"]);
    q.apply(workerLost(d, "gone", ctx));
    expect(q.onWorker("w1")).toEqual([]);
    const [again] = [...q.lanes()];
    expect(again && idsOf(again)).toEqual(["b", "a", "c"]);
  });

  it("keeps one lane per selector and per shard, rebuilt when the shard count changes", () => {
    const q = queue();
    q.apply(record("x", { seq: 1, selector: { zone: "a", gpu: "yes" } }));
    q.apply(record("y", { seq: 2, selector: { gpu: "yes", zone: "a" } }));
    q.apply(record("7", { seq: 3, placement: "shard" }));
    q.apply(record("8", { seq: 4, placement: "shard" }));
    const shape = () =>
      [...q.lanes()].map((l) => (l.kind === "shard" ? `s${l.shard}:${idsOf(l)}` : `b:${idsOf(l)}`)).sort();
    expect(shape()).toEqual(["b:x,y", "s-1:7,8"]);
    q.setTotalShards(4);
    expect(shape()).toEqual(["b:x,y", `s${shardOf("7", 4)}:7`, `s${shardOf("8", 4)}:8`].sort());
  });

  it("bounds unfinished tasks, counting reservations", () => {
    const q = queue({ maxQueuedTasks: 3 });
    q.apply(record("a"));
    const r = q.reserve(2);
    expect(() => q.reserve(1)).toThrow(TaskError);
    r.release();
    r.release();
    expect(() => q.reserve(2)).not.toThrow();
    try {
      q.reserve(5);
    } catch (e) {
      expect(e).toMatchObject({ code: "resource_exhausted" });
    }
  });

  it("keeps the most recent finished tasks only", () => {
    const q = queue({ recentFinished: 2 });
    for (const id of ["a", "b", "c"]) q.apply(requestCancel(record(id), ctx).record);
    expect(q.get("a")).toBeUndefined();
    expect(q.get("c")?.record.state).toBe("cancelled");
    expect(q.counts().cancelled).toBe(2);
  });

  it("keeps progress only while the same attempt runs", () => {
    const q = queue();
    const d = dispatchTask(record("a"), "w1", ctx);
    q.apply(d);
    expect(q.setProgress("a", 0.5, "half")).toBe(false);
    q.apply({ ...d, state: "running" });
    expect(q.setProgress("a", 0.5, "half")).toBe(true);
    q.apply({ ...d, state: "running" });
    expect(q.get("a")?.progress).toEqual({ fraction: 0.5, message: "half" });
    q.apply(workerLost(d, "gone", ctx));
    expect(q.get("a")?.progress).toBeUndefined();
  });

  it("lists unfinished tasks by id in pages, by state", () => {
    const q = queue();
    for (const id of ["d", "a", "c", "b"]) q.apply(record(id));
    q.apply(dispatchTask(record("c"), "w", ctx));
    const p1 = q.listUnfinished({ afterId: "", limit: 2 });
    expect(p1.tasks.map((t) => t.record.id)).toEqual(["a", "b"]);
    expect(p1.more).toBe(true);
    const p2 = q.listUnfinished({ afterId: "b", limit: 2 });
    expect(p2.tasks.map((t) => t.record.id)).toEqual(["c", "d"]);
    expect(p2.more).toBe(false);
    expect(
      q.listUnfinished({ afterId: "", limit: 10, state: "dispatched" }).tasks.map((t) => t.record.id),
    ).toEqual(["c"]);
  });

  it("places from the heads of a long backlog across priorities", () => {
    const q = queue({ maxQueuedTasks: 200_000 });
    for (let i = 0; i < 10_000; i++) q.apply(record(`t${i}`, { seq: i + 1, priority: (i % 5) + 1 }));
    const w = {
      nodeId: "w",
      labels: {},
      slots: 3,
      running: 0,
      cpuPercent: 0,
      eventLoopDelayMs: 0,
      memoryRssBytes: 0,
      queueLength: 0,
      accepting: true,
    };
    expect(placeTasks(q.lanes(), [w]).map((d) => d.taskId)).toEqual(["t0", "t5", "t10"]);
  });
});

// ---- model-based: the queue's indexes always agree with the records it was given -----------

type Op =
  | { kind: "submit"; priority: number; selector: number; shard: boolean }
  | { kind: "dispatch"; pick: number; worker: string }
  | { kind: "lost"; pick: number }
  | { kind: "cancel"; pick: number }
  | { kind: "shards"; n: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("submit" as const),
      priority: fc.integer({ min: 1, max: 5 }),
      selector: fc.integer({ min: 0, max: 2 }),
      shard: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("dispatch" as const),
      pick: fc.nat(),
      worker: fc.constantFrom("w1", "w2"),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("lost" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant("shards" as const), n: fc.integer({ min: 0, max: 3 }) }),
  },
);

const selectors: Record<string, string>[] = [{}, { zone: "a" }, { zone: "b" }];

describe("TaskQueue against a model", () => {
  it("lanes hold exactly the queued tasks in (priority, seq) order; workers, counts and lists agree", () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 80 }), fc.integer({ min: 0, max: 5 }), (ops, recent) => {
        const q = queue({ recentFinished: recent });
        const model = new Map<string, TaskRecord>();
        let seq = 0;
        let totalShards = 0;
        for (const op of ops) {
          const all = [...model.values()];
          const pick = (n: number, f: (r: TaskRecord) => boolean) => {
            const c = all.filter(f);
            return c.length === 0 ? undefined : c[n % c.length];
          };
          let next: TaskRecord | undefined;
          if (op.kind === "submit") {
            seq = q.nextSeq();
            next = record(`t${seq}`, {
              seq,
              priority: op.priority,
              placement: op.shard ? "shard" : "balanced",
              selector: op.shard ? {} : (selectors[op.selector] ?? {}),
            });
          } else if (op.kind === "dispatch") {
            const r = pick(op.pick, (x) => x.state === "queued" && x.attempt < x.maxAttempts);
            if (r) next = dispatchTask(r, op.worker, ctx);
          } else if (op.kind === "lost") {
            const r = pick(op.pick, (x) => x.state === "dispatched");
            if (r) next = workerLost(r, "lost", ctx);
          } else if (op.kind === "cancel") {
            const r = pick(op.pick, (x) => !isFinalState(x.state) || x.state === "cancelled");
            if (r) next = requestCancel(r, ctx).record;
          } else {
            totalShards = op.n;
            q.setTotalShards(op.n);
          }
          if (next !== undefined) {
            model.set(next.id, next);
            q.apply(next);
          }
        }
        const records = [...model.values()];
        const unfinished = records.filter((r) => !isFinalState(r.state));
        expect(q.unfinished).toBe(unfinished.length);
        // Lanes: every queued task exactly once, in order, in the lane its placement names.
        const seen: string[] = [];
        for (const lane of q.lanes()) {
          const tasks = [...lane.tasks];
          expect(tasks.length).toBeGreaterThan(0);
          for (let i = 1; i < tasks.length; i++) {
            const a = tasks[i - 1];
            const b = tasks[i];
            if (a && b)
              expect(a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq)).toBe(true);
          }
          for (const t of tasks) {
            const r = model.get(t.id);
            expect(r?.state).toBe("queued");
            if (r === undefined) continue;
            if (lane.kind === "shard") {
              expect(r.placement).toBe("shard");
              expect(lane.shard).toBe(totalShards > 0 ? shardOf(r.id, totalShards) : -1);
            } else expect(lane.selector).toEqual(r.selector);
            seen.push(t.id);
          }
        }
        expect(seen.sort()).toEqual(
          records
            .filter((r) => r.state === "queued")
            .map((r) => r.id)
            .sort(),
        );
        for (const w of ["w1", "w2"]) {
          expect([...q.onWorker(w)].sort()).toEqual(
            unfinished
              .filter((r) => r.state === "dispatched" && r.worker === w)
              .map((r) => r.id)
              .sort(),
          );
        }
        const counts = q.counts();
        for (const s of taskStates) {
          const inModel = records.filter((r) => r.state === s).length;
          if (isFinalState(s)) expect(counts[s]).toBe(Math.min(inModel, counts[s]));
          else expect(counts[s]).toBe(inModel);
        }
        const finishedInMemory = records.filter((r) => isFinalState(r.state) && q.get(r.id) !== undefined);
        expect(finishedInMemory.length).toBeLessThanOrEqual(recent);
        const listed: string[] = [];
        let after = "";
        for (;;) {
          const page = q.listUnfinished({ afterId: after, limit: 3 });
          listed.push(...page.tasks.map((t) => t.record.id));
          if (!page.more) break;
          after = page.tasks[page.tasks.length - 1]?.record.id ?? after;
        }
        expect(listed).toEqual(unfinished.map((r) => r.id).sort());
      }),
      { numRuns: 400 },
    );
  });
});
