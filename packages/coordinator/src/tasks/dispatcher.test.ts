import { create } from "@bufbuild/protobuf";
import { TaskState, TaskUpdateSchema } from "@org/proto";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { CoordinatorError } from "../errors.js";
import type { CoordinatorMessageKind } from "../server/worker-session.js";
import { TaskDispatcher, type TaskMembership } from "./dispatcher.js";
import { MemoryTaskStore } from "./memory-task-store.js";
import { TaskBoard } from "./task-board.js";
import { resolveTaskOptions } from "./task-options.js";
import type { TaskWrite } from "./task-persistence.js";

// The dispatcher over a real TaskBoard on a memory store whose writes can be made to fail
// (etcd unavailable for a moment), with one fake member.
const log = pino({ level: "silent" });
const never = new AbortController().signal;

/** A memory store whose next `failures` writes fail as etcd would while it elects a leader. */
class FlakyStore extends MemoryTaskStore {
  failures = 0;

  override async write(w: TaskWrite): Promise<number> {
    if (this.failures > 0) {
      this.failures -= 1;
      throw new CoordinatorError("etcd_unavailable", "fenced write failed: 4 DEADLINE_EXCEEDED");
    }
    return super.write(w);
  }
}

const closers: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function setup(o: { store?: FlakyStore; epoch?: number } = {}) {
  const store = o.store ?? new FlakyStore();
  const epoch = o.epoch ?? 3;
  const options = resolveTaskOptions({});
  const sent: CoordinatorMessageKind[] = [];
  /** Task ids the dispatcher said are recorded, at the moment it said so. */
  const recorded: { id: string; state: string | undefined }[] = [];
  let dispatcher: TaskDispatcher | undefined;
  const board = new TaskBoard({
    persistence: store,
    epoch,
    options,
    log,
    onWaiting: (g) => dispatcher?.kick(g),
  });
  const member: TaskMembership = {
    placementWorkers: (running) => [
      {
        nodeId: "w",
        labels: {},
        slots: 1,
        running: running("w"),
        cpuPercent: 0,
        eventLoopDelayMs: 0,
        memoryRssBytes: 0,
        queueLength: 0,
        accepting: true,
      },
    ],
    shardOwnership: () => undefined,
    send: (_n, kind) => {
      sent.push(kind);
      return true;
    },
    recorded: (_n, id, _attempt) => {
      // What the store holds when the worker is told it may forget its report.
      void store.read("g", [id]).then((m) => recorded.push({ id, state: m.get(id)?.record.state }));
    },
  };
  dispatcher = new TaskDispatcher({
    board,
    log,
    membership: () => member,
    now: () => performance.now(),
    epoch,
  });
  const d = dispatcher;
  closers.push(async () => {
    d.close();
    await board.close();
  });
  return { store, board, dispatcher: d, sent, recorded };
}

async function until(pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await pred())) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const task = (id: string) => ({
  id,
  payload: new TextEncoder().encode("p"),
  placement: "balanced" as const,
  selector: {},
  priority: 3,
  maxAttempts: 3,
  timeoutMs: 0,
});

describe("TaskDispatcher", () => {
  it("reconciles a worker that resumes before the new leader has loaded the group's tasks", async () => {
    // The old leader wrote the dispatch and died before the TaskDispatch reached the worker;
    // the worker's Hello (claiming nothing) reaches the next leader before its task load.
    const store = new FlakyStore();
    const old = setup({ store, epoch: 2 });
    await old.board.submit("g", [task("t")], never);
    old.dispatcher.kick("g");
    await until(() => old.sent.some((k) => k?.case === "task"));
    const next = setup({ store, epoch: 3 });
    expect(next.board.loaded("g")).toBeUndefined();
    next.dispatcher.resumed("g", "w", []);
    await until(() => next.sent.some((k) => k?.case === "task" && k.value.attempt === 2));
  });

  it("after a deferred reconcile, requeues nothing this leader dispatched itself", async () => {
    const store = new FlakyStore();
    const next = setup({ store, epoch: 3 });
    await next.board.submit("g", [task("mine")], never);
    next.dispatcher.kick("g");
    await until(() => next.sent.some((k) => k?.case === "task"));
    const g = next.board.loaded("g");
    expect(g?.onWorker("w")).toEqual(["mine"]);
    next.dispatcher.resumed("g", "w", ["mine"]);
    await new Promise((r) => setTimeout(r, 100));
    expect(next.sent.filter((k) => k?.case === "task")).toHaveLength(1);
  });

  it("applies a worker's final report again when its write failed (etcd unavailable for a moment)", async () => {
    const { store, board, dispatcher, sent } = setup();
    await board.submit(
      "g",
      [
        {
          id: "t",
          payload: new TextEncoder().encode("p"),
          placement: "balanced",
          selector: {},
          priority: 3,
          maxAttempts: 3,
          timeoutMs: 0,
        },
      ],
      never,
    );
    dispatcher.kick("g");
    await until(() => sent.some((k) => k?.case === "task"));
    store.failures = 1;
    dispatcher.update(
      "g",
      "w",
      create(TaskUpdateSchema, {
        taskId: "t",
        attempt: 1,
        state: TaskState.SUCCEEDED,
        result: new TextEncoder().encode("done"),
      }),
    );
    // The worker does not send it again (its stream stayed up): the leader must retry.
    await until(async () => (await store.read("g", ["t"])).get("t")?.record.state === "succeeded");
    expect(store.failures).toBe(0);
  });

  it("tells the worker a final report is recorded only once it is in the store, and a stale one at once", async () => {
    const { store, board, dispatcher, sent, recorded } = setup();
    await board.submit("g", [task("t")], never);
    dispatcher.kick("g");
    await until(() => sent.some((k) => k?.case === "task"));
    const final = (attempt: number) =>
      create(TaskUpdateSchema, { taskId: "t", attempt, state: TaskState.SUCCEEDED });
    // Two failed writes first: no word to the worker while the report is in no record.
    store.failures = 2;
    dispatcher.update("g", "w", final(1));
    await new Promise((r) => setTimeout(r, 200));
    expect(recorded).toEqual([]);
    await until(() => recorded.length === 1);
    expect(recorded).toEqual([{ id: "t", state: "succeeded" }]);
    // The same report again (a worker repeating it to a new leader): stale now, and still
    // the worker is told to forget it.
    dispatcher.update("g", "w", final(1));
    await until(() => recorded.length === 2);
    expect(recorded[1]).toEqual({ id: "t", state: "succeeded" });
    // A RUNNING report is never "recorded": the worker keeps nothing for it.
    dispatcher.update(
      "g",
      "w",
      create(TaskUpdateSchema, { taskId: "t", attempt: 1, state: TaskState.RUNNING }),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(recorded).toHaveLength(2);
  });
});
