import { CoordinatorError } from "../errors.js";
import {
  applyReport,
  attemptInFlight,
  attemptTimedOut,
  dispatchable,
  dispatchTask,
  type ReportOutcome,
  type WorkerReport,
  workerLost,
} from "./attempts.js";
import type { TaskLedger } from "./task-ledger.js";
import { encodeBlob, type TaskRecord } from "./task-record.js";

/** A worker's TaskUpdate as TaskAttempts takes it: the result still as bytes. */
export type AttemptReport = Omit<WorkerReport, "result"> & { readonly result?: Uint8Array };

/** A dispatched task: what the TaskDispatch carries. */
export interface DispatchedTask {
  readonly record: TaskRecord;
  readonly payload: Uint8Array;
}

/**
 * The attempt side of the leader's tasks, driven by the dispatcher (the HeartbeatStream
 * sessions and the placement rounds): dispatch placed tasks, apply workers' reports,
 * end the attempts of lost workers, find attempts past their timeout. The rules are
 * attempts.ts's; this only runs them through the ledger (write, replay, publish, one
 * change of a task at a time).
 *
 * @example
 * ```ts
 * const sent = await board.attempts.dispatch("g", placeTasks(queue.lanes(), workers));
 * for (const t of sent) session(t.record.worker).sendDispatch(t);
 * ```
 */
export class TaskAttempts {
  readonly #l: TaskLedger;

  /** @internal built by TaskBoard */
  constructor(ledger: TaskLedger) {
    this.#l = ledger;
  }

  /**
   * Dispatches placed tasks: one fenced write per task (the store batches them), after
   * which the caller sends each TaskDispatch. Run one placement round at a time: memory
   * changes only once a write committed, so a round started before the previous one
   * settled would see the same tasks waiting and the same slots free. A task no longer
   * dispatchable (cancelled meanwhile) is skipped; a deposed leader's round throws.
   */
  async dispatch(
    group: string,
    decisions: readonly { readonly taskId: string; readonly nodeId: string }[],
  ): Promise<DispatchedTask[]> {
    const l = this.#l;
    l.checkOpen();
    const g = await l.group(group);
    const payloads = await l.persistence.readPayloads(
      group,
      decisions.map((d) => d.taskId),
    );
    const settled = await Promise.allSettled(
      decisions.map((d) =>
        l.serial(group, d.taskId, async () => {
          const v = g.queue.get(d.taskId);
          if (v === undefined || !dispatchable(v.record)) return undefined;
          const record = dispatchTask(v.record, d.nodeId, l.ctx());
          await l.persist(g, { kind: "update", record });
          l.stats.dispatched += 1;
          l.o.metrics?.taskEvent(group, "dispatched", 1);
          if (record.attempt === 1)
            l.o.metrics?.taskStartLatency(group, l.now() - Date.parse(record.createdAt));
          return { record, payload: payloads.get(d.taskId) ?? new Uint8Array() };
        }),
      ),
    );
    const out: DispatchedTask[] = [];
    for (const s of settled) {
      if (s.status === "fulfilled" && s.value !== undefined) out.push(s.value);
      else if (s.status === "rejected") {
        const e = CoordinatorError.from(s.reason);
        l.o.log.warn({ event: "task_dispatch_failed", group, code: e.code, err: e.message });
        if (e.code === "deposed") throw e;
      }
    }
    return out;
  }

  /**
   * A worker's TaskUpdate for task `id`. Accepted only for the task's current attempt
   * from the worker it went to; anything else is dropped and counted in `stats.stale`. A
   * result larger than --max-task-bytes fails the task for good (it could never be stored).
   */
  async report(group: string, id: string, u: AttemptReport): Promise<ReportOutcome> {
    const l = this.#l;
    l.checkOpen();
    const g = await l.group(group);
    return l.serial(group, id, async () => {
      const max = l.o.options.maxTaskBytes;
      let report: WorkerReport = { ...u, result: undefined };
      if (u.state === "succeeded" && u.result !== undefined) {
        report =
          u.result.byteLength > max
            ? {
                ...u,
                result: undefined,
                state: "failed",
                retryable: false,
                message: `result of ${u.result.byteLength} bytes is over --max-task-bytes (${max})`,
              }
            : { ...u, result: encodeBlob(u.result) };
      }
      const before = g.queue.get(id)?.record;
      const out = applyReport(before, report, l.ctx());
      if (!out.accepted) {
        l.stats.stale[out.reason] += 1;
        l.o.metrics?.taskStaleUpdate(group, out.reason);
        l.o.log.info({
          event: "task_update_stale",
          group,
          task: id,
          worker: u.worker,
          attempt: u.attempt,
          reason: out.reason,
        });
        return out;
      }
      if (out.durable) await l.persist(g, { kind: "update", record: out.record });
      else {
        // `running` and progress: memory only, published to watchers.
        if (out.record !== before) g.queue.apply(out.record);
        if (out.progress !== undefined) g.queue.setProgress(id, out.progress.fraction, out.progress.message);
        l.publish(g, out.record);
      }
      l.count(out.record, before);
      return out;
    });
  }

  /**
   * The worker `nodeId` is gone (expelled after its session timeout, left, or it did not
   * claim these tasks on reconnect): its attempts end, and the tasks are requeued for
   * their next attempt or fail when their attempts are used up. Pass `ids` to end only
   * those (the tasks a reconnecting worker did not claim).
   */
  async workerLost(group: string, nodeId: string, message: string, ids?: readonly string[]): Promise<void> {
    const l = this.#l;
    l.checkOpen();
    const g = await l.group(group);
    const targets = ids ?? g.queue.onWorker(nodeId);
    await Promise.all(
      targets.map((id) =>
        l.serial(group, id, async () => {
          const before = g.queue.get(id)?.record;
          if (before === undefined || !attemptInFlight(before) || before.worker !== nodeId) return;
          const record = workerLost(before, message, l.ctx());
          await l.persist(g, { kind: "update", record });
          l.count(record, before);
        }),
      ),
    );
  }

  /** Attempts in flight past their timeout: the dispatcher sends each worker CANCEL_TASK. */
  overdue(group: string): TaskRecord[] {
    const q = this.#l.loaded(group)?.queue;
    if (q === undefined) return [];
    const now = this.#l.now();
    const out: TaskRecord[] = [];
    for (const t of q.unfinishedTasks()) if (attemptTimedOut(t.record, now)) out.push(t.record);
    return out;
  }
}
