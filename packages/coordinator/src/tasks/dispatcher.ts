import type { CommandAck, TaskUpdate } from "@org/proto";
import { CommandKind, TaskPlacement, TaskState } from "@org/proto";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { CoordinatorMessageKind } from "../server/worker-session.js";
import { attemptInFlight } from "./attempts.js";
import { type PlacementWorker, placeTasks, type ShardOwnership } from "./placement.js";
import type { DispatchedTask } from "./task-attempts.js";
import type { TaskBoard } from "./task-board.js";
import type { TaskRecord } from "./task-record.js";

/** What the dispatcher needs from one group's membership (implemented by the Group). */
export interface TaskMembership {
  /**
   * Members as placement sees them; `running(nodeId)` is the number of tasks in flight on
   * a node. `accepting` is false for anyone who must get nothing new: no open stream, an
   * incarnation that may not run yet, stopped for a restart, being removed.
   */
  placementWorkers(running: (nodeId: string) => number): PlacementWorker[];
  /** The active version's shard owners and the shards a pending version moves. */
  shardOwnership(): ShardOwnership | undefined;
  /** Sends on the live incarnation's open stream; false when there is none. */
  send(nodeId: string, kind: CoordinatorMessageKind): boolean;
  /** `nodeId`'s final report of `taskId`'s `attempt` is recorded (or needs no record): tell it. */
  recorded(nodeId: string, taskId: string, attempt: number): void;
}

/** What the Group tells the dispatcher. */
export interface TaskEvents {
  /** Something changed that may let waiting tasks be placed. */
  kick(group: string): void;
  /**
   * Every incarnation of `nodeId` that may hold tasks is gone (expelled, left, superseded,
   * stopped for a restart); each stops by itself by `until` (monotonic ms), after which its
   * tasks go back to the queue. Tasks dispatched to the node after this call are not affected.
   */
  incarnationEnded(group: string, nodeId: string, until: number): void;
  /** The live incarnation came back on a new stream and says it still runs these tasks. */
  resumed(group: string, nodeId: string, runningTaskIds: readonly string[]): void;
}

export interface TaskDispatcherOptions {
  readonly board: TaskBoard;
  readonly log: Logger;
  /** The group's membership, when this leader serves the group. */
  readonly membership: (group: string) => TaskMembership | undefined;
  /** Monotonic ms. */
  readonly now: () => number;
  /** The leader's epoch, carried by every dispatch and command. */
  readonly epoch: number;
}

/** Tasks placed in one round at most; a full round runs again at once. */
const roundLimit = 512;

/**
 * Places waiting tasks on workers and carries each attempt over the HeartbeatStream: one
 * placement round at a time per group (memory changes only after the dispatch writes
 * committed), TaskDispatch sent only after the write, workers' updates applied through the
 * attempt rules, cancels and timeouts sent as ControlCommands, and a lost incarnation's
 * tasks requeued only once it has provably stopped (its fence), so two attempts of one task
 * never run at once.
 */
export class TaskDispatcher implements TaskEvents {
  readonly #o: TaskDispatcherOptions;
  readonly #rounds = new Map<string, { running: boolean; again: boolean }>();
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Cancels already sent, by task id: the attempt they were sent for. */
  readonly #cancelSent = new Map<string, number>();
  #commandId = 0n;
  #closed = false;

  constructor(o: TaskDispatcherOptions) {
    this.#o = o;
  }

  /** Runs a placement round for `group` soon (rounds coalesce; one runs at a time). */
  kick(group: string): void {
    if (this.#closed) return;
    const r = this.#rounds.get(group);
    if (r !== undefined) {
      r.again = true;
      return;
    }
    const state = { running: true, again: false };
    this.#rounds.set(group, state);
    setImmediate(() => void this.#loop(group, state));
  }

  async #loop(group: string, state: { running: boolean; again: boolean }): Promise<void> {
    try {
      for (;;) {
        state.again = false;
        const full = await this.#round(group);
        if (this.#closed || (!state.again && !full)) break;
      }
    } catch (e) {
      const err = CoordinatorError.from(e);
      if (err.code !== "deposed" && err.code !== "closed" && !this.#closed) {
        this.#o.log.warn({ event: "task_round_failed", group, code: err.code, err: err.message });
        this.#later(1000, () => this.kick(group));
      }
    } finally {
      this.#rounds.delete(group);
    }
  }

  /** One placement round; true when it placed a full round (more may be waiting). */
  async #round(group: string): Promise<boolean> {
    const m = this.#o.membership(group);
    if (m === undefined) return false;
    const g = await this.#o.board.group(group);
    const q = g.queue;
    if (q.waiting === 0) return false;
    const shards = m.shardOwnership();
    if (shards !== undefined) q.setTotalShards(shards.totalShards);
    const workers = m.placementWorkers((n) => q.runningOn(n));
    const decisions = placeTasks(q.lanes(), workers, shards, roundLimit);
    if (decisions.length === 0) return false;
    const sent = await this.#o.board.attempts.dispatch(group, decisions);
    const shardOf = new Map(decisions.map((d) => [d.taskId, d.shard]));
    for (const t of sent) {
      // The dispatch is durable already: a worker whose stream just went either claims the
      // task when it reconnects or loses it when it is expelled.
      m.send(t.record.worker ?? "", {
        case: "task",
        value: this.#dispatchMessage(t, shardOf.get(t.record.id), shards),
      });
    }
    return decisions.length >= roundLimit;
  }

  #dispatchMessage(t: DispatchedTask, shard: number | undefined, shards: ShardOwnership | undefined) {
    const r = t.record;
    return {
      taskId: r.id,
      shardId: shard ?? 0,
      attempt: r.attempt,
      payload: t.payload,
      leaderEpoch: BigInt(this.#o.epoch),
      timeoutMs: r.timeoutMs,
      priority: r.priority,
      maxAttempts: r.maxAttempts,
      placement: r.placement === "shard" ? TaskPlacement.SHARD : TaskPlacement.BALANCED,
      shardVersion: BigInt(shards?.version ?? 0),
      createdAtMs: BigInt(Date.parse(r.createdAt)),
    };
  }

  /** A TaskUpdate from `nodeId`'s live incarnation (the caller checked the stream is it). */
  update(group: string, nodeId: string, u: TaskUpdate): void {
    const state = reportState(u.state);
    if (state === undefined) return;
    void this.#o.board.attempts
      .report(group, u.taskId, {
        worker: nodeId,
        attempt: u.attempt,
        state,
        progress: u.progress,
        message: u.message,
        ...(u.result.byteLength > 0 ? { result: u.result } : {}),
        ...(u.retryable === undefined ? {} : { retryable: u.retryable }),
      })
      .then(
        (out) => {
          // A final report is in the record now, or was dropped as stale (the leader's
          // record already says otherwise): either way the worker need not keep it.
          if (state === "succeeded" || state === "failed" || state === "cancelled")
            this.#o.membership(group)?.recorded(nodeId, u.taskId, u.attempt);
          if (out.accepted && !attemptInFlight(out.record)) {
            this.#cancelSent.delete(u.taskId);
            this.kick(group); // a slot is free
          } else if (
            !out.accepted &&
            out.reason === "unknown_task" &&
            (state === "running" || state === "queued")
          ) {
            // It runs something the leader does not know (or no longer gives it): stop it.
            this.#cancel(group, nodeId, u.taskId, u.attempt, "the leader does not know this attempt");
          }
        },
        (e: unknown) => {
          const err = CoordinatorError.from(e);
          if (this.#closed || err.code === "deposed" || err.code === "closed") return;
          // The report is in no record yet (memory changes only after the write), and the
          // worker will not send it again on a stream that stayed up: without a retry a
          // finished task would stay running until its worker goes. Applying it again is
          // harmless (a report for an attempt that has moved on is dropped).
          this.#o.log.warn({
            event: "task_update_failed",
            group,
            task: u.taskId,
            attempt: u.attempt,
            code: err.code,
            err: err.message,
            retryInMs: 500,
          });
          this.#later(500, () => this.update(group, nodeId, u));
        },
      );
  }

  /** A CommandAck: logged; a refused cancel is retried at the next timeout sweep. */
  ack(group: string, nodeId: string, a: CommandAck): void {
    if (!a.ok)
      this.#o.log.warn({
        event: "command_refused",
        group,
        node: nodeId,
        command: String(a.commandId),
        message: a.message,
      });
  }

  /** A client cancelled a task in flight: tell its worker. */
  cancelled(group: string, record: TaskRecord): void {
    if (record.worker !== null)
      this.#cancel(group, record.worker, record.id, record.attempt, "cancelled by a client");
  }

  incarnationEnded(group: string, nodeId: string, until: number): void {
    const g = this.#o.board.loaded(group);
    // The tasks in flight on the node now: all of them belong to the ended incarnations
    // (a new one gets nothing before their fences are over).
    const ids = g === undefined ? undefined : [...g.onWorker(nodeId)];
    if (ids !== undefined && ids.length === 0) return;
    const run = () =>
      void this.#o.board.attempts.workerLost(group, nodeId, `worker ${nodeId} is gone`, ids).then(
        () => this.kick(group),
        (e: unknown) => this.#failed("task_requeue_failed", group, e),
      );
    const wait = until - this.#o.now();
    if (wait <= 0) run();
    else this.#later(wait, run);
  }

  resumed(group: string, nodeId: string, runningTaskIds: readonly string[]): void {
    const g = this.#o.board.loaded(group);
    if (g === undefined) {
      // The worker is back before this leader loaded the group's tasks (right after a
      // failover): reconcile once they are, or a dispatch an earlier leader wrote and never
      // delivered stays with the live worker forever (the task-storm drill saw 3 of 300).
      void this.#o.board.group(group).then(
        () => this.#reconcile(group, nodeId, runningTaskIds, true),
        (e: unknown) => this.#failed("task_load_failed", group, e),
      );
      return;
    }
    this.#reconcile(group, nodeId, runningTaskIds, false);
  }

  /**
   * `deferred`: the Hello was answered before the tasks were loaded, and this leader may
   * have dispatched to the node since, on the live stream; only earlier leaders' dispatches
   * can have been lost (requeueing one of ours would run a second attempt beside it).
   */
  #reconcile(group: string, nodeId: string, runningTaskIds: readonly string[], deferred: boolean): void {
    const g = this.#o.board.loaded(group);
    if (g === undefined || this.#closed) return;
    const claimed = new Set(runningTaskIds);
    // What the leader gave the node and the node does not run was never received (the
    // stream it went on is gone): it goes back to the queue at once.
    const unclaimed = g
      .onWorker(nodeId)
      .filter(
        (id) => !claimed.has(id) && (!deferred || (g.get(id)?.record.leaderEpoch ?? 0) < this.#o.epoch),
      );
    if (unclaimed.length > 0)
      void this.#o.board.attempts
        .workerLost(group, nodeId, `worker ${nodeId} did not claim it on reconnect`, unclaimed)
        .then(
          () => this.kick(group),
          (e: unknown) => this.#failed("task_requeue_failed", group, e),
        );
    // What the node runs and the leader does not give it must stop.
    const mine = new Set(g.onWorker(nodeId));
    for (const id of claimed)
      if (!mine.has(id)) this.#cancel(group, nodeId, id, 0, "not this worker's task any more");
    this.kick(group);
  }

  /**
   * The first placement after a failover: in-flight tasks whose worker is not a member any
   * more are requeued once every incarnation a previous leader knew has stopped (`until`).
   * Tasks of members stay with them: claimed on reconnect, or lost with the member.
   */
  adopt(group: string, isMember: (nodeId: string) => boolean, until: number): void {
    void this.#o.board.group(group).then(
      (g) => {
        const orphans = new Map<string, string[]>();
        for (const t of g.queue.unfinishedTasks()) {
          const w = t.record.worker;
          if (w === null || !attemptInFlight(t.record) || isMember(w)) continue;
          const list = orphans.get(w) ?? [];
          list.push(t.record.id);
          orphans.set(w, list);
        }
        for (const [nodeId] of orphans) this.incarnationEnded(group, nodeId, until);
        this.kick(group);
      },
      (e: unknown) => this.#failed("task_load_failed", group, e),
    );
  }

  /** Periodic: attempts past their timeout are cancelled; groups with waiting tasks are kicked. */
  sweep(groups: Iterable<string>): void {
    for (const group of groups) {
      const q = this.#o.board.loaded(group);
      if (q === undefined) continue;
      for (const r of this.#o.board.attempts.overdue(group))
        if (r.worker !== null)
          this.#cancel(group, r.worker, r.id, r.attempt, `attempt ${r.attempt} ran past ${r.timeoutMs} ms`);
      if (q.waiting > 0) this.kick(group);
    }
  }

  #cancel(group: string, nodeId: string, taskId: string, attempt: number, reason: string): void {
    if (attempt > 0 && this.#cancelSent.get(taskId) === attempt) return;
    if (attempt > 0) this.#cancelSent.set(taskId, attempt);
    if (this.#cancelSent.size > 100_000) this.#cancelSent.clear();
    this.#commandId += 1n;
    const sent = this.#o.membership(group)?.send(nodeId, {
      case: "command",
      value: {
        commandId: this.#commandId,
        kind: CommandKind.CANCEL_TASK,
        taskId,
        attempt,
        leaderEpoch: BigInt(this.#o.epoch),
        reason,
      },
    });
    this.#o.log.info({
      event: "task_cancel_sent",
      group,
      node: nodeId,
      task: taskId,
      attempt,
      reason,
      sent: sent === true,
    });
  }

  #later(ms: number, fn: () => void): void {
    if (this.#closed) return;
    const t = setTimeout(() => {
      this.#timers.delete(t);
      if (!this.#closed) fn();
    }, ms);
    this.#timers.add(t);
  }

  #failed(event: string, group: string, e: unknown): void {
    const err = CoordinatorError.from(e);
    if (this.#closed || err.code === "deposed" || err.code === "closed") return;
    this.#o.log.warn({ event, group, code: err.code, err: err.message });
    this.#later(1000, () => this.kick(group));
  }

  close(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}

function reportState(s: TaskState): "queued" | "running" | "succeeded" | "failed" | "cancelled" | undefined {
  switch (s) {
    case TaskState.QUEUED:
      return "queued";
    case TaskState.RUNNING:
      return "running";
    case TaskState.SUCCEEDED:
      return "succeeded";
    case TaskState.FAILED:
      return "failed";
    case TaskState.CANCELLED:
      return "cancelled";
    default:
      return undefined;
  }
}
