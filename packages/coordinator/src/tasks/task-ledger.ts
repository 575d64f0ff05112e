import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { StaleReason, TransitionContext } from "./attempts.js";
import type { TaskOptions } from "./task-options.js";
import type { TaskPersistence, TaskWrite } from "./task-persistence.js";
import { TaskQueue } from "./task-queue.js";
import { isFinalState, type TaskRecord, type TaskView } from "./task-record.js";
import { TaskChangeLog } from "./task-watch-log.js";

/** Options of {@link TaskLedger} (and of TaskBoard, which builds one). */
export interface TaskLedgerOptions {
  /** Where records are kept: the leader's TaskStore (or a MemoryTaskStore in tests). */
  readonly persistence: TaskPersistence;
  /** This leadership's epoch, stamped on every record it writes. */
  readonly epoch: number;
  readonly options: TaskOptions;
  readonly log: Logger;
  /** Unix ms. @default Date.now */
  readonly now?: () => number;
  /** A group has new waiting tasks (submitted, requeued, loaded): the dispatcher runs a placement round. */
  readonly onWaiting?: (group: string) => void;
  /** Where task events are counted (Prometheus, see replica/metrics.ts). */
  readonly metrics?: TaskMetricsSink;
}

/** What happened to a group's tasks, as the leader counts it for Prometheus. */
export interface TaskMetricsSink {
  /** `n` tasks reached `event` (a submit counts the tasks asked for, new or not). */
  taskEvent(
    group: string,
    event: "submitted" | "dispatched" | "succeeded" | "failed" | "cancelled" | "requeued",
    n: number,
  ): void;
  /** A worker's report was dropped (an older attempt, another worker, an unknown task). */
  taskStaleUpdate(group: string, reason: StaleReason): void;
  /** A task's first attempt was dispatched `ms` after it was submitted. */
  taskStartLatency(group: string, ms: number): void;
}

/** A group's tasks on the leader. */
export interface GroupTasks {
  readonly queue: TaskQueue;
  readonly log: TaskChangeLog;
  /** Creates in flight by id, so a concurrent submit of the same id waits for them. */
  readonly creating: Map<string, Promise<TaskView>>;
}

/** Counters for metrics (monotonic). */
export interface TaskBoardStats {
  submitted: number;
  created: number;
  dispatched: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  requeued: number;
  stale: Record<StaleReason, number>;
}

/**
 * The record runtime under TaskBoard and TaskAttempts (STYLE.md 15): every change is a
 * record, written (fenced, batched) through the persistence, and only then replayed into
 * the group's queue and published to its watchers, so memory never runs ahead of etcd and
 * a failover's load replays through the same queue. Changes to one task run one at a
 * time, in order. A group's unfinished tasks are loaded on its first use.
 *
 * @internal the task subsystem's own plumbing; use TaskBoard.
 */
export class TaskLedger {
  readonly o: TaskLedgerOptions;
  readonly persistence: TaskPersistence;
  readonly #now: () => number;
  readonly #groups = new Map<string, Promise<GroupTasks>>();
  readonly #loaded = new Map<string, GroupTasks>();
  readonly #chains = new Map<string, Promise<void>>();
  readonly #outstanding = new Map<number, number>();
  #token = 0;
  #closed = false;
  readonly stats: TaskBoardStats = {
    submitted: 0,
    created: 0,
    dispatched: 0,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    requeued: 0,
    stale: { unknown_task: 0, not_running: 0, stale_attempt: 0, wrong_worker: 0 },
  };

  constructor(o: TaskLedgerOptions) {
    this.o = o;
    this.persistence = o.persistence;
    this.#now = o.now ?? Date.now;
  }

  now(): number {
    return this.#now();
  }

  ctx(): TransitionContext {
    return { nowMs: this.#now(), leaderEpoch: this.o.epoch };
  }

  checkOpen(): void {
    if (this.#closed) throw new CoordinatorError("closed", "this replica no longer leads");
  }

  /** The group's tasks, loading its unfinished ones from the persistence on first use. */
  group(group: string): Promise<GroupTasks> {
    let g = this.#groups.get(group);
    if (g === undefined) {
      const loading = this.#load(group);
      g = loading;
      this.#groups.set(group, loading);
      // A failed load is retried by the next caller.
      loading.catch(() => {
        if (this.#groups.get(group) === loading) this.#groups.delete(group);
      });
    }
    return g;
  }

  /** The group's tasks if they are loaded (for callers that must not wait). */
  loaded(group: string): GroupTasks | undefined {
    return this.#loaded.get(group);
  }

  async #load(group: string): Promise<GroupTasks> {
    const o = this.o.options;
    const queue = new TaskQueue({
      group,
      maxQueuedTasks: o.maxQueuedTasks,
      recentFinished: o.recentFinished,
    });
    const log = new TaskChangeLog({
      epoch: this.o.epoch,
      backlog: o.watchBacklog,
      bufferLimit: o.watchBufferLimit,
    });
    let afterId = "";
    let atRevision: number | undefined;
    let loaded = 0;
    for (;;) {
      // One revision for every page: a consistent snapshot, however long the walk.
      const page = await this.persistence.scan(group, { afterId, limit: 500, atRevision });
      atRevision = page.revision;
      for (const t of page.tasks) {
        if (isFinalState(t.record.state)) continue;
        queue.apply(t.record);
        loaded += 1;
      }
      if (!page.more) break;
      afterId = page.lastId;
    }
    const g: GroupTasks = { queue, log, creating: new Map() };
    this.#loaded.set(group, g);
    if (this.#closed) log.close();
    this.o.log.info({ event: "task_group_loaded", group, unfinished: loaded });
    if (queue.waiting > 0) this.o.onWaiting?.(group);
    return g;
  }

  /**
   * An etcd revision such that every durable change at or below it has been published:
   * the writes not yet published all commit above the revision known when they were sent.
   */
  #safeRevision(): number {
    let min = this.persistence.lastRevision;
    for (const r of this.#outstanding.values()) if (r < min) min = r;
    return min;
  }

  /** Writes, then replays and publishes. */
  async persist(g: GroupTasks, w: TaskWrite): Promise<void> {
    const token = ++this.#token;
    this.#outstanding.set(token, this.persistence.lastRevision);
    try {
      await this.persistence.write(w);
      // Committed: published in this same turn, so it no longer holds the safe revision back.
      this.#outstanding.delete(token);
      g.queue.apply(w.record);
      this.publish(g, w.record);
    } finally {
      this.#outstanding.delete(token);
    }
  }

  /** Publishes the task's state in memory (after a replay, or a memory-only change). */
  publish(g: GroupTasks, record: TaskRecord): void {
    g.log.append(g.queue.get(record.id) ?? { record, progress: undefined }, this.#safeRevision());
  }

  /** Runs `fn` after every earlier change of the same task settled. */
  serial<T>(group: string, id: string, fn: () => Promise<T>): Promise<T> {
    const key = `${group}\u0000${id}`;
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#chains.set(key, tail);
    void tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key);
    });
    return run;
  }

  /** The task as memory (or, for a finished one no longer in memory, the persistence) has it. */
  async current(group: string, g: GroupTasks, id: string): Promise<TaskView | undefined> {
    const mem = g.queue.get(id);
    if (mem !== undefined) return mem;
    const stored = (await this.persistence.read(group, [id])).get(id);
    // Memory wins if the task appeared meanwhile (a submit committed during the read).
    return (
      g.queue.get(id) ?? (stored === undefined ? undefined : { record: stored.record, progress: undefined })
    );
  }

  /** Counts a change for metrics, and signals a requeue to the dispatcher. */
  count(after: TaskRecord, before: TaskRecord | undefined): void {
    if (before?.state === after.state && before.attempt === after.attempt) return;
    const m = this.o.metrics;
    if (after.state === "succeeded") {
      this.stats.succeeded += 1;
      m?.taskEvent(after.group, "succeeded", 1);
    } else if (after.state === "failed") {
      this.stats.failed += 1;
      m?.taskEvent(after.group, "failed", 1);
    } else if (after.state === "cancelled") {
      this.stats.cancelled += 1;
      m?.taskEvent(after.group, "cancelled", 1);
    } else if (after.state === "queued" && before !== undefined) {
      this.stats.requeued += 1;
      m?.taskEvent(after.group, "requeued", 1);
      this.o.onWaiting?.(after.group);
    }
  }

  /** Ends every change log and refuses new calls; waits for changes in progress. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const g of this.#loaded.values()) g.log.close();
    await Promise.all([...this.#chains.values()]);
  }
}
