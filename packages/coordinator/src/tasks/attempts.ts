import { TaskError } from "./task-error.js";
import { type Blob, isFinalState, type TaskFailure, type TaskRecord } from "./task-record.js";

/**
 * The attempt rules, as pure functions from a task record to its next record. Nothing
 * here does I/O or reads a clock: the caller passes the time and the leader epoch, writes
 * the records marked `durable` through the fenced store, and replays every outcome into
 * its queue.
 *
 * States: `queued -> dispatched -> running -> succeeded | failed | cancelled`; `attempt`
 * counts dispatches. An attempt ends with a worker's final report, with the loss of its
 * worker, or (after a timeout or a cancel) with the worker's CANCELLED report; then the
 * task is requeued for its next attempt, or finished when the handler said it cannot
 * succeed or `maxAttempts` dispatches were used up.
 *
 * Fencing (DESIGN.md, "Attempts are fenced"): a worker's report is accepted only for the
 * task's current attempt, from the worker that attempt went to, while the task is
 * dispatched or running. Everything else is stale, dropped, and counted by the caller.
 * Because the worker fences itself before the leader can declare it lost, the requeue
 * that follows a loss never overlaps the lost attempt.
 *
 * An attempt past its timeout is cancelled (a ControlCommand); the task stays with its
 * worker until that worker confirms or is lost, because requeueing a task whose handler
 * may still run would start a second, overlapping attempt.
 */

/** What every transition needs: the time (Unix ms) and the writing leader's epoch. */
export interface TransitionContext {
  readonly nowMs: number;
  readonly leaderEpoch: number;
}

/** A worker's TaskUpdate, as the attempt rules see it. */
export interface WorkerReport {
  /** The node id of the stream it came on. */
  readonly worker: string;
  readonly attempt: number;
  readonly state: "queued" | "running" | "succeeded" | "failed" | "cancelled";
  /** 0 to 1, with `running`. */
  readonly progress?: number;
  readonly message?: string;
  /** With `succeeded` (already size-checked by the caller). */
  readonly result?: Blob;
  /** With `failed`: false when another attempt cannot succeed. @default true */
  readonly retryable?: boolean;
}

/** Why a report was dropped. */
export type StaleReason = "unknown_task" | "not_running" | "stale_attempt" | "wrong_worker";

/** What a report does. */
export type ReportOutcome =
  | { readonly accepted: false; readonly reason: StaleReason }
  | {
      readonly accepted: true;
      /** The task after the report (the same object when nothing changed). */
      readonly record: TaskRecord;
      /** Whether `record` must be written (fenced) before anyone is told. */
      readonly durable: boolean;
      /** Progress to keep in memory and stream to watchers, with `running`. */
      readonly progress?: { readonly fraction: number; readonly message: string };
    };

/** What a cancel request does. */
export interface CancelOutcome {
  readonly record: TaskRecord;
  /** Whether `record` changed and must be written. */
  readonly durable: boolean;
  /** Whether the worker running the attempt must be told to stop it (CANCEL_TASK). */
  readonly command: boolean;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Whether the task waits, dispatched, or runs: an attempt may be in flight. */
export function attemptInFlight(r: TaskRecord): boolean {
  return r.state === "dispatched" || r.state === "running";
}

/** Unix ms at which the current attempt times out; undefined without a timeout or attempt. */
export function attemptDeadline(r: TaskRecord): number | undefined {
  if (r.timeoutMs <= 0 || !attemptInFlight(r) || r.dispatchedAt === undefined) return undefined;
  return Date.parse(r.dispatchedAt) + r.timeoutMs;
}

/** Whether the current attempt ran past its timeout at `nowMs`. */
export function attemptTimedOut(r: TaskRecord, nowMs: number): boolean {
  const d = attemptDeadline(r);
  return d !== undefined && nowMs >= d;
}

/** Whether the task may be dispatched now. */
export function dispatchable(r: TaskRecord): boolean {
  return r.state === "queued" && r.attempt < r.maxAttempts;
}

/**
 * The record of dispatching attempt `attempt + 1` to `worker`: a fenced write, done before
 * the TaskDispatch is sent.
 */
export function dispatchTask(r: TaskRecord, worker: string, ctx: TransitionContext): TaskRecord {
  if (!dispatchable(r))
    throw new TaskError(
      "failed_precondition",
      `task ${r.id} cannot be dispatched: it is ${r.state} after ${r.attempt}/${r.maxAttempts} attempts`,
    );
  return {
    ...r,
    state: "dispatched",
    attempt: r.attempt + 1,
    worker,
    leaderEpoch: ctx.leaderEpoch,
    updatedAt: iso(ctx.nowMs),
    dispatchedAt: iso(ctx.nowMs),
  };
}

/** Ends the current attempt with `failure`: the next attempt, or `failed` for good. */
function endAttempt(r: TaskRecord, failure: TaskFailure, ctx: TransitionContext): TaskRecord {
  const { dispatchedAt: _d, cancelRequested: _c, ...rest } = r;
  const retry = failure.retryable && r.attempt < r.maxAttempts;
  return {
    ...rest,
    state: retry ? "queued" : "failed",
    error: failure,
    leaderEpoch: ctx.leaderEpoch,
    updatedAt: iso(ctx.nowMs),
  };
}

/** Finishes the task as `state` (with `extra`), dropping what only an attempt in flight has. */
function finish(
  r: TaskRecord,
  state: "succeeded" | "cancelled",
  ctx: TransitionContext,
  extra: Partial<TaskRecord> = {},
): TaskRecord {
  const { dispatchedAt: _d, cancelRequested: _c, ...rest } = r;
  return { ...rest, ...extra, state, leaderEpoch: ctx.leaderEpoch, updatedAt: iso(ctx.nowMs) };
}

/** Applies a worker's report to the task it names (undefined: the leader does not know it). */
export function applyReport(
  r: TaskRecord | undefined,
  u: WorkerReport,
  ctx: TransitionContext,
): ReportOutcome {
  if (r === undefined) return { accepted: false, reason: "unknown_task" };
  if (!attemptInFlight(r)) return { accepted: false, reason: "not_running" };
  if (u.attempt !== r.attempt) return { accepted: false, reason: "stale_attempt" };
  if (u.worker !== r.worker) return { accepted: false, reason: "wrong_worker" };
  switch (u.state) {
    case "queued":
      return { accepted: true, record: r, durable: false };
    case "running": {
      const fraction = Number.isFinite(u.progress) ? Math.min(1, Math.max(0, u.progress ?? 0)) : 0;
      // `running` lives in memory only: after a failover the record still says dispatched,
      // and the worker's reconnect (Hello.running_task_ids) settles it.
      const record = r.state === "running" ? r : { ...r, state: "running" as const };
      return { accepted: true, record, durable: false, progress: { fraction, message: u.message ?? "" } };
    }
    case "succeeded":
      return {
        accepted: true,
        durable: true,
        record: finish(r, "succeeded", ctx, u.result === undefined ? {} : { result: u.result }),
      };
    case "failed":
    case "cancelled": {
      if (r.cancelRequested === true)
        return { accepted: true, durable: true, record: finish(r, "cancelled", ctx) };
      const timedOut = attemptTimedOut(r, ctx.nowMs);
      const failure: TaskFailure = timedOut
        ? {
            message: `attempt ${r.attempt} ran past ${r.timeoutMs} ms`,
            reason: "timeout",
            retryable: true,
            attempt: r.attempt,
          }
        : u.state === "failed"
          ? {
              message: u.message ?? "",
              reason: "handler",
              retryable: u.retryable ?? true,
              attempt: r.attempt,
            }
          : {
              // Cancelled without being asked: the worker gave the task back (lost its
              // shard, fenced itself, is closing).
              message:
                u.message === undefined || u.message === "" ? "the worker gave the task back" : u.message,
              reason: "worker_lost",
              retryable: true,
              attempt: r.attempt,
            };
      return { accepted: true, durable: true, record: endAttempt(r, failure, ctx) };
    }
  }
}

/**
 * The worker of the current attempt is gone (expelled after its session timeout, left, or
 * it did not claim the task on reconnect): the next attempt, or the end of the task. Only
 * for a task in flight; the caller checks that `r.worker` is the lost worker.
 */
export function workerLost(r: TaskRecord, message: string, ctx: TransitionContext): TaskRecord {
  if (!attemptInFlight(r))
    throw new TaskError("failed_precondition", `task ${r.id} is ${r.state}, not dispatched or running`);
  if (r.cancelRequested === true) return finish(r, "cancelled", ctx);
  return endAttempt(r, { message, reason: "worker_lost", retryable: true, attempt: r.attempt }, ctx);
}

/**
 * A client's cancel: a queued task is cancelled at once; one in flight is marked (durably,
 * so a new leader repeats the command) and its worker is told to stop. Cancelling a
 * cancelled task changes nothing; a succeeded or failed one cannot be cancelled.
 */
export function requestCancel(r: TaskRecord, ctx: TransitionContext): CancelOutcome {
  if (r.state === "cancelled") return { record: r, durable: false, command: false };
  if (isFinalState(r.state))
    throw new TaskError("failed_precondition", `task ${r.id} already ${r.state}; it cannot be cancelled`);
  if (r.state === "queued") return { record: finish(r, "cancelled", ctx), durable: true, command: false };
  if (r.cancelRequested === true) return { record: r, durable: false, command: true };
  return {
    record: { ...r, cancelRequested: true, leaderEpoch: ctx.leaderEpoch, updatedAt: iso(ctx.nowMs) },
    durable: true,
    command: true,
  };
}
