import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  applyReport,
  attemptDeadline,
  attemptInFlight,
  dispatchable,
  dispatchTask,
  requestCancel,
  type TransitionContext,
  type WorkerReport,
  workerLost,
} from "./attempts.js";
import { TaskError } from "./task-error.js";
import { isFinalState, payloadDigest, type TaskRecord, type TaskStateName } from "./task-record.js";

function queued(over: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: "t1",
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

const ctx = (nowMs = 1000, leaderEpoch = 7): TransitionContext => ({ nowMs, leaderEpoch });
const report = (over: Partial<WorkerReport> & Pick<WorkerReport, "state">): WorkerReport => ({
  worker: "w1",
  attempt: 1,
  ...over,
});

describe("dispatchTask", () => {
  it("starts the next attempt on the worker, stamped with the epoch and time", () => {
    const r = dispatchTask(queued(), "w1", ctx(5000, 9));
    expect(r).toMatchObject({ state: "dispatched", attempt: 1, worker: "w1", leaderEpoch: 9 });
    expect(r.dispatchedAt).toBe(new Date(5000).toISOString());
  });

  it("refuses a task that is not queued, or whose attempts are used up", () => {
    const d = dispatchTask(queued(), "w1", ctx());
    expect(() => dispatchTask(d, "w2", ctx())).toThrow(TaskError);
    expect(() => dispatchTask(queued({ attempt: 3 }), "w1", ctx())).toThrow(/3\/3 attempts/);
  });
});

describe("applyReport fencing", () => {
  const running = applyReport(dispatchTask(queued(), "w1", ctx()), report({ state: "running" }), ctx());
  const inFlight = running.accepted ? running.record : queued();

  it("drops reports for an unknown task, another attempt, another worker, or a task not in flight", () => {
    expect(applyReport(undefined, report({ state: "succeeded" }), ctx())).toEqual({
      accepted: false,
      reason: "unknown_task",
    });
    expect(applyReport(inFlight, report({ state: "succeeded", attempt: 2 }), ctx())).toEqual({
      accepted: false,
      reason: "stale_attempt",
    });
    expect(applyReport(inFlight, report({ state: "succeeded", worker: "w2" }), ctx())).toEqual({
      accepted: false,
      reason: "wrong_worker",
    });
    expect(applyReport(queued(), report({ state: "running" }), ctx())).toEqual({
      accepted: false,
      reason: "not_running",
    });
  });

  it("keeps running and progress in memory, and finishes with a durable write", () => {
    expect(running).toMatchObject({ accepted: true, durable: false, progress: { fraction: 0, message: "" } });
    const p = applyReport(inFlight, report({ state: "running", progress: 7, message: "x" }), ctx());
    expect(p).toMatchObject({ accepted: true, durable: false, progress: { fraction: 1, message: "x" } });
    const done = applyReport(inFlight, report({ state: "succeeded", result: { text: "ok" } }), ctx(2000, 8));
    expect(done).toMatchObject({ accepted: true, durable: true });
    if (!done.accepted) return;
    expect(done.record).toMatchObject({ state: "succeeded", result: { text: "ok" }, leaderEpoch: 8 });
    expect(done.record.dispatchedAt).toBeUndefined();
  });
});

describe("retries", () => {
  const first = dispatchTask(queued({ maxAttempts: 2 }), "w1", ctx());

  it("requeues a failed attempt, then fails for good when the attempts are used up", () => {
    const a = applyReport(first, report({ state: "failed", message: "boom" }), ctx());
    expect(a).toMatchObject({ accepted: true, durable: true });
    if (!a.accepted) return;
    expect(a.record).toMatchObject({
      state: "queued",
      attempt: 1,
      error: { reason: "handler", message: "boom" },
    });
    const second = dispatchTask(a.record, "w2", ctx());
    expect(second.attempt).toBe(2);
    const b = applyReport(second, report({ state: "failed", worker: "w2", attempt: 2 }), ctx());
    if (!b.accepted) throw new Error("dropped");
    expect(b.record).toMatchObject({ state: "failed", attempt: 2, error: { attempt: 2 } });
  });

  it("fails at once when the handler says the error is not retryable", () => {
    const a = applyReport(first, report({ state: "failed", retryable: false }), ctx());
    if (!a.accepted) throw new Error("dropped");
    expect(a.record).toMatchObject({ state: "failed", error: { retryable: false } });
  });

  it("requeues after the worker is lost, or after it gave the task back", () => {
    expect(workerLost(first, "expelled", ctx())).toMatchObject({
      state: "queued",
      error: { reason: "worker_lost", message: "expelled" },
    });
    const back = applyReport(first, report({ state: "cancelled" }), ctx());
    if (!back.accepted) throw new Error("dropped");
    expect(back.record).toMatchObject({ state: "queued", error: { reason: "worker_lost" } });
  });

  it("counts a timed-out attempt's cancellation as a timeout", () => {
    const t = dispatchTask(queued({ timeoutMs: 100 }), "w1", ctx(1000));
    expect(attemptDeadline(t)).toBe(1100);
    const r = applyReport(t, report({ state: "cancelled" }), ctx(1100));
    if (!r.accepted) throw new Error("dropped");
    expect(r.record).toMatchObject({ state: "queued", error: { reason: "timeout" } });
  });
});

describe("requestCancel", () => {
  it("cancels a queued task at once and is idempotent after", () => {
    const c = requestCancel(queued(), ctx());
    expect(c).toMatchObject({ durable: true, command: false, record: { state: "cancelled" } });
    expect(requestCancel(c.record, ctx())).toEqual({ record: c.record, durable: false, command: false });
  });

  it("marks a task in flight durably, commands its worker, and its end is a cancellation", () => {
    const d = dispatchTask(queued(), "w1", ctx());
    const c = requestCancel(d, ctx());
    expect(c).toMatchObject({
      durable: true,
      command: true,
      record: { state: "dispatched", cancelRequested: true },
    });
    expect(requestCancel(c.record, ctx())).toMatchObject({ durable: false, command: true });
    const end = applyReport(c.record, report({ state: "failed" }), ctx());
    if (!end.accepted) throw new Error("dropped");
    expect(end.record.state).toBe("cancelled");
    expect(end.record.cancelRequested).toBeUndefined();
    expect(workerLost(c.record, "gone", ctx()).state).toBe("cancelled");
  });

  it("refuses to cancel a succeeded or failed task", () => {
    for (const state of ["succeeded", "failed"] as const) {
      expect(() => requestCancel(queued({ state }), ctx())).toThrow(
        expect.objectContaining({ code: "failed_precondition" }),
      );
    }
  });
});

// ---- a whole life, driven at random ---------------------------------------------------------

type Event =
  | { kind: "dispatch"; worker: string }
  | { kind: "report"; worker: string; attemptDelta: number; state: WorkerReport["state"]; retryable: boolean }
  | { kind: "lost" }
  | { kind: "cancel" }
  | { kind: "tick"; ms: number };

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  fc.record({ kind: fc.constant("dispatch" as const), worker: fc.constantFrom("w1", "w2") }),
  fc.record({
    kind: fc.constant("report" as const),
    worker: fc.constantFrom("w1", "w2"),
    attemptDelta: fc.constantFrom(0, 0, 0, -1, 1),
    state: fc.constantFrom("queued", "running", "succeeded", "failed", "cancelled"),
    retryable: fc.boolean(),
  }),
  fc.constant({ kind: "lost" as const }),
  fc.constant({ kind: "cancel" as const }),
  fc.record({ kind: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 200 }) }),
);

const allowed: Record<TaskStateName, readonly TaskStateName[]> = {
  queued: ["queued", "dispatched", "cancelled"],
  dispatched: ["dispatched", "running", "queued", "succeeded", "failed", "cancelled"],
  running: ["running", "queued", "succeeded", "failed", "cancelled"],
  succeeded: ["succeeded"],
  failed: ["failed"],
  cancelled: ["cancelled"],
};

describe("attempt rules on random event sequences", () => {
  it("keep states on the allowed edges, attempts within bounds, one attempt in flight, stale reports inert", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom(0, 50),
        fc.array(eventArb, { maxLength: 40 }),
        (maxAttempts, timeoutMs, events) => {
          let r = queued({ maxAttempts, timeoutMs });
          let now = 0;
          // The workers' view: which (worker, attempt) runs right now. At most one at a time.
          let live: { worker: string; attempt: number } | undefined;
          for (const ev of events) {
            const before = r;
            now += ev.kind === "tick" ? ev.ms : 1;
            const c = ctx(now);
            switch (ev.kind) {
              case "dispatch":
                if (!dispatchable(r)) {
                  expect(() => dispatchTask(r, ev.worker, c)).toThrow(TaskError);
                  break;
                }
                // A new attempt starts only when no attempt is in flight.
                expect(live).toBeUndefined();
                r = dispatchTask(r, ev.worker, c);
                live = { worker: ev.worker, attempt: r.attempt };
                break;
              case "report": {
                const out = applyReport(
                  r,
                  {
                    worker: ev.worker,
                    attempt: r.attempt + ev.attemptDelta,
                    state: ev.state,
                    retryable: ev.retryable,
                  },
                  c,
                );
                const current =
                  live !== undefined &&
                  live.worker === ev.worker &&
                  live.attempt === r.attempt + ev.attemptDelta;
                if (!current || !attemptInFlight(r)) {
                  expect(out.accepted).toBe(false);
                  break;
                }
                expect(out.accepted).toBe(true);
                if (!out.accepted) break;
                r = out.record;
                if (!attemptInFlight(r)) live = undefined;
                break;
              }
              case "lost":
                if (!attemptInFlight(r)) break;
                r = workerLost(r, "lost", c);
                live = undefined;
                break;
              case "cancel":
                if (r.state === "succeeded" || r.state === "failed") {
                  expect(() => requestCancel(r, c)).toThrow(TaskError);
                  break;
                }
                r = requestCancel(r, c).record;
                break;
              case "tick":
                break;
            }
            expect(allowed[before.state]).toContain(r.state);
            expect(r.attempt).toBeGreaterThanOrEqual(before.attempt);
            expect(r.attempt).toBeLessThanOrEqual(maxAttempts);
            if (isFinalState(before.state)) expect(r).toBe(before);
            expect(attemptInFlight(r)).toBe(live !== undefined);
            if (r.state === "queued") expect(r.attempt).toBeLessThan(maxAttempts);
            if (r.cancelRequested === true) expect(attemptInFlight(r)).toBe(true);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
