import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import {
  applyReport,
  attemptInFlight,
  attemptTimedOut,
  dispatchable,
  dispatchTask,
  type ReportOutcome,
  requestCancel,
  type StaleReason,
  type TransitionContext,
  type WorkerReport,
  workerLost,
} from "./attempts.js";
import { TaskError } from "./task-error.js";
import type { SubmitOutcome, TaskHost, TaskListPage, TaskSubmission, WatchBatch } from "./task-host.js";
import type { TaskOptions } from "./task-options.js";
import type { TaskPersistence, TaskWrite } from "./task-persistence.js";
import { TaskQueue } from "./task-queue.js";
import {
  encodeBlob,
  generateTaskId,
  isFinalState,
  payloadDigest,
  type TaskRecord,
  type TaskStateName,
  type TaskView,
} from "./task-record.js";
import { watchGroup } from "./task-watch.js";
import { TaskChangeLog } from "./task-watch-log.js";

/** Options of {@link TaskBoard}. */
export interface TaskBoardOptions {
  /** Where records are kept: the leader's {@link TaskStore} (or a MemoryTaskStore in tests). */
  readonly persistence: TaskPersistence;
  /** This leadership's epoch, stamped on every record it writes. */
  readonly epoch: number;
  readonly options: TaskOptions;
  readonly log: Logger;
  /** Unix ms. @default Date.now */
  readonly now?: () => number;
  /** A group has new waiting tasks (submitted, requeued): the dispatcher runs a placement round. */
  readonly onWaiting?: (group: string) => void;
  /** A client cancelled a task in flight: the dispatcher sends CANCEL_TASK to `record.worker`. */
  readonly onCancel?: (group: string, record: TaskRecord) => void;
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

const pageTokenVersion = 1;

function encodePageToken(afterId: string): string {
  return Buffer.from(JSON.stringify({ v: pageTokenVersion, a: afterId })).toString("base64url");
}

function decodePageToken(token: string): string {
  if (token === "") return "";
  try {
    const o = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { v?: unknown; a?: unknown };
    if (o.v === pageTokenVersion && typeof o.a === "string") return o.a;
  } catch {
    // below
  }
  throw new TaskError("invalid_argument", "page_token is not one this service issued");
}

const unfinishedStates: ReadonlySet<TaskStateName> = new Set(["queued", "dispatched", "running"]);

/**
 * The leader's tasks: every group's {@link TaskQueue} and change log over one
 * {@link TaskPersistence}, serving {@link TaskHost} for the task service, and the
 * attempt side the dispatcher drives (dispatch, worker reports, worker loss, timeouts).
 *
 * Every change is a record: made by the pure rules of attempts.ts, written (when it
 * matters for safety) through the persistence, and only then replayed into the queue and
 * published to watchers. Changes to one task run one at a time, in order, so two writes
 * of one task never race. A group's unfinished tasks are loaded on its first use (a
 * submit, a read, or the dispatcher's {@link group} call when a worker of it joins).
 *
 * @example
 * ```ts
 * const board = new TaskBoard({ persistence: store, epoch, options, log, onWaiting: (g) => dispatcher.kick(g) });
 * addTaskService(server, () => ({ host: board }), { signal, log, options });
 * ```
 */
export class TaskBoard implements TaskHost {
  readonly #o: TaskBoardOptions;
  readonly #p: TaskPersistence;
  readonly #now: () => number;
  readonly #groups = new Map<string, Promise<GroupTasks>>();
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

  constructor(o: TaskBoardOptions) {
    this.#o = o;
    this.#p = o.persistence;
    this.#now = o.now ?? Date.now;
  }

  get epoch(): number {
    return this.#o.epoch;
  }

  #ctx(): TransitionContext {
    return { nowMs: this.#now(), leaderEpoch: this.#o.epoch };
  }

  #checkOpen(): void {
    if (this.#closed) throw new CoordinatorError("closed", "this replica no longer leads");
  }

  /** The group's tasks, loading its unfinished ones from the persistence on first use. */
  group(group: string): Promise<GroupTasks> {
    let g = this.#groups.get(group);
    if (g === undefined) {
      g = this.#load(group);
      this.#groups.set(group, g);
      // A failed load is retried by the next caller.
      g.catch(() => {
        if (this.#groups.get(group) === g) this.#groups.delete(group);
      });
    }
    return g;
  }

  /** The group's queue if it is loaded (for placement rounds, which must not wait). */
  loaded(group: string): TaskQueue | undefined {
    return this.#loaded.get(group)?.queue;
  }

  readonly #loaded = new Map<string, GroupTasks>();

  async #load(group: string): Promise<GroupTasks> {
    const o = this.#o.options;
    const queue = new TaskQueue({
      group,
      maxQueuedTasks: o.maxQueuedTasks,
      recentFinished: o.recentFinished,
    });
    const log = new TaskChangeLog({
      epoch: this.#o.epoch,
      backlog: o.watchBacklog,
      bufferLimit: o.watchBufferLimit,
    });
    let afterId = "";
    let atRevision: number | undefined;
    let loaded = 0;
    for (;;) {
      const page = await this.#p.scan(group, { afterId, limit: 500, atRevision });
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
    this.#o.log.info({ event: "task_group_loaded", group, unfinished: loaded });
    if (queue.waiting > 0) this.#o.onWaiting?.(group);
    return g;
  }

  /**
   * An etcd revision such that every durable change at or below it has been published:
   * the writes not yet published will all commit above the revision known when they were
   * sent.
   */
  #safeRevision(): number {
    let min = this.#p.lastRevision;
    for (const r of this.#outstanding.values()) if (r < min) min = r;
    return min;
  }

  /** Writes, then replays and publishes: memory never runs ahead of etcd. */
  async #persist(g: GroupTasks, w: TaskWrite): Promise<void> {
    const token = ++this.#token;
    this.#outstanding.set(token, this.#p.lastRevision);
    try {
      await this.#p.write(w);
      // Committed: published in this same turn, so it no longer holds the safe revision back.
      this.#outstanding.delete(token);
      this.#replay(g, w.record);
    } finally {
      this.#outstanding.delete(token);
    }
  }

  /** Applies a record to memory and publishes it. */
  #replay(g: GroupTasks, record: TaskRecord): void {
    g.queue.apply(record);
    this.#publish(g, record.id, record);
  }

  #publish(g: GroupTasks, id: string, record: TaskRecord): void {
    g.log.append(g.queue.get(id) ?? { record, progress: undefined }, this.#safeRevision());
  }

  /** Runs `fn` after every earlier change of the same task settled. */
  #serial<T>(group: string, id: string, fn: () => Promise<T>): Promise<T> {
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
  async #current(group: string, g: GroupTasks, id: string): Promise<TaskView | undefined> {
    const mem = g.queue.get(id);
    if (mem !== undefined) return mem;
    const stored = (await this.#p.read(group, [id])).get(id);
    // Memory wins if the task appeared meanwhile (a submit committed during the read).
    return (
      g.queue.get(id) ?? (stored === undefined ? undefined : { record: stored.record, progress: undefined })
    );
  }

  // ---- TaskHost -----------------------------------------------------------------------

  async submit(
    group: string,
    tasks: readonly TaskSubmission[],
    _signal: AbortSignal,
  ): Promise<SubmitOutcome[]> {
    this.#checkOpen();
    const g = await this.group(group);
    const now = this.#now();
    const items = tasks.map((s) => ({
      s,
      id: s.id ?? generateTaskId(now),
      digest: payloadDigest(s.payload),
    }));
    this.stats.submitted += items.length;
    let existing = new Map<string, TaskView>();
    // Settle what is known about the ids; repeat if a concurrent submit started creating
    // one of them while this one waited.
    for (let round = 0; ; round++) {
      existing = new Map();
      const unknown: string[] = [];
      for (const it of items) {
        const mem = g.queue.get(it.id);
        const creating = g.creating.get(it.id);
        if (mem !== undefined) existing.set(it.id, mem);
        else if (creating !== undefined) {
          const v = await creating.catch(() => undefined);
          if (v !== undefined) existing.set(it.id, v);
          else unknown.push(it.id);
        } else if (it.s.id !== undefined) unknown.push(it.id);
      }
      if (unknown.length > 0) {
        for (const [id, t] of await this.#p.read(group, unknown))
          existing.set(id, g.queue.get(id) ?? { record: t.record, progress: undefined });
      }
      const changed = items.some(
        (it) => !existing.has(it.id) && (g.queue.get(it.id) !== undefined || g.creating.has(it.id)),
      );
      if (!changed) break;
      if (round >= 3)
        throw new TaskError("unavailable", "submit raced with concurrent submits of the same ids; retry");
    }
    for (const it of items) {
      const e = existing.get(it.id);
      if (e !== undefined && e.record.payloadSha256 !== it.digest)
        throw new TaskError(
          "already_exists",
          `task ${it.id} exists in group ${group} with a different payload`,
        );
    }
    const fresh = items.filter((it) => !existing.has(it.id));
    if (fresh.length === 0)
      return items.map((it) => ({ task: existing.get(it.id) as TaskView, created: false }));
    this.#checkOpen();
    const reservation = g.queue.reserve(fresh.length);
    const iso = new Date(now).toISOString();
    const created = new Map<string, TaskRecord>();
    const settle = new Map<string, { resolve: (v: TaskView) => void; reject: (e: unknown) => void }>();
    for (const it of fresh) {
      const record: TaskRecord = {
        id: it.id,
        group,
        state: "queued",
        attempt: 0,
        maxAttempts: it.s.maxAttempts,
        placement: it.s.placement,
        selector: { ...it.s.selector },
        priority: it.s.priority,
        timeoutMs: it.s.timeoutMs,
        worker: null,
        leaderEpoch: this.#o.epoch,
        payloadBytes: it.s.payload.byteLength,
        payloadSha256: it.digest,
        seq: g.queue.nextSeq(),
        createdAt: iso,
        updatedAt: iso,
      };
      created.set(it.id, record);
      const { promise, resolve, reject } = Promise.withResolvers<TaskView>();
      promise.catch(() => undefined);
      g.creating.set(it.id, promise);
      settle.set(it.id, { resolve, reject });
    }
    const results = await Promise.allSettled(
      fresh.map((it) =>
        this.#persist(g, { kind: "create", record: created.get(it.id) as TaskRecord, payload: it.s.payload }),
      ),
    );
    reservation.release();
    let failure: unknown;
    fresh.forEach((it, i) => {
      const r = results[i];
      const s = settle.get(it.id);
      if (r?.status === "fulfilled")
        s?.resolve(g.queue.get(it.id) ?? { record: created.get(it.id) as TaskRecord, progress: undefined });
      else {
        failure ??= r?.reason;
        s?.reject(r?.reason);
      }
      g.creating.delete(it.id);
    });
    const stored = results.filter((r) => r.status === "fulfilled").length;
    this.stats.created += stored;
    if (stored > 0) this.#o.onWaiting?.(group);
    if (failure !== undefined) throw failure;
    return items.map((it) => {
      const e = existing.get(it.id);
      if (e !== undefined) return { task: e, created: false };
      return {
        task: g.queue.get(it.id) ?? { record: created.get(it.id) as TaskRecord, progress: undefined },
        created: true,
      };
    });
  }

  async get(group: string, id: string, _signal: AbortSignal): Promise<TaskView> {
    this.#checkOpen();
    const g = await this.group(group);
    const v = await this.#current(group, g, id);
    if (v === undefined) throw new TaskError("not_found", `group ${group} has no task ${id}`);
    return v;
  }

  async list(
    group: string,
    o: { readonly state: TaskStateName | undefined; readonly pageSize: number; readonly pageToken: string },
    _signal: AbortSignal,
  ): Promise<TaskListPage> {
    this.#checkOpen();
    const afterId = decodePageToken(o.pageToken);
    const g = await this.group(group);
    if (o.state !== undefined && unfinishedStates.has(o.state)) {
      // Every unfinished task is in memory, with its freshest state (running, progress).
      const page = g.queue.listUnfinished({ state: o.state, afterId, limit: o.pageSize });
      const last = page.tasks[page.tasks.length - 1];
      return {
        tasks: page.tasks,
        nextPageToken: page.more && last !== undefined ? encodePageToken(last.record.id) : "",
      };
    }
    // Finished tasks (or all): etcd has every task; memory overlays the fresher state of
    // unfinished ones. Scan a bounded number of records per call: a page may be short.
    const tasks: TaskView[] = [];
    let cursor = afterId;
    let more = true;
    for (let scanned = 0; more && tasks.length < o.pageSize && scanned < 10 * o.pageSize; ) {
      const page = await this.#p.scan(group, { afterId: cursor, limit: o.pageSize - tasks.length });
      scanned += page.tasks.length;
      for (const t of page.tasks) {
        const v = g.queue.get(t.record.id) ?? { record: t.record, progress: undefined };
        if (o.state === undefined || v.record.state === o.state) tasks.push(v);
      }
      more = page.more;
      cursor = page.lastId;
    }
    return { tasks, nextPageToken: more ? encodePageToken(cursor) : "" };
  }

  async cancel(group: string, id: string, reason: string, _signal: AbortSignal): Promise<TaskView> {
    this.#checkOpen();
    const g = await this.group(group);
    return this.#serial(group, id, async () => {
      const v = await this.#current(group, g, id);
      if (v === undefined) throw new TaskError("not_found", `group ${group} has no task ${id}`);
      const out = requestCancel(v.record, this.#ctx());
      if (out.durable) {
        await this.#persist(g, { kind: "update", record: out.record });
        if (out.record.state === "cancelled") this.stats.cancelled += 1;
      }
      if (out.command) {
        this.#o.log.info({
          event: "task_cancel_requested",
          group,
          task: id,
          worker: out.record.worker,
          reason,
        });
        this.#o.onCancel?.(group, out.record);
      }
      return g.queue.get(id) ?? { record: out.record, progress: undefined };
    });
  }

  async *watch(
    group: string,
    o: { readonly ids: readonly string[]; readonly cursor: string },
    signal: AbortSignal,
  ): AsyncGenerator<WatchBatch> {
    this.#checkOpen();
    const g = await this.group(group);
    yield* watchGroup({
      group,
      ids: o.ids,
      cursor: o.cursor,
      signal,
      log: g.log,
      queue: g.queue,
      persistence: this.#p,
    });
    if (!signal.aborted)
      throw new TaskError("unavailable", "this replica no longer leads; reconnect to the leader");
  }

  // ---- the attempt side (driven by the dispatcher) -------------------------------------

  /**
   * Dispatches placed tasks: one fenced write per task (batched by the store), then the
   * caller sends each TaskDispatch. Run one placement round at a time: memory changes only
   * once a write committed, so a second round started before the first settled would see
   * the same tasks waiting. A task no longer dispatchable (cancelled meanwhile) is skipped.
   */
  async dispatch(
    group: string,
    decisions: readonly { readonly taskId: string; readonly nodeId: string }[],
  ): Promise<{ readonly record: TaskRecord; readonly payload: Uint8Array }[]> {
    this.#checkOpen();
    const g = await this.group(group);
    const payloads = await this.#p.readPayloads(
      group,
      decisions.map((d) => d.taskId),
    );
    const settled = await Promise.allSettled(
      decisions.map((d) =>
        this.#serial(group, d.taskId, async () => {
          const v = g.queue.get(d.taskId);
          if (v === undefined || !dispatchable(v.record)) return undefined;
          const record = dispatchTask(v.record, d.nodeId, this.#ctx());
          await this.#persist(g, { kind: "update", record });
          this.stats.dispatched += 1;
          return { record, payload: payloads.get(d.taskId) ?? new Uint8Array() };
        }),
      ),
    );
    const out: { record: TaskRecord; payload: Uint8Array }[] = [];
    for (const s of settled) {
      if (s.status === "fulfilled" && s.value !== undefined) out.push(s.value);
      else if (s.status === "rejected") {
        const e = CoordinatorError.from(s.reason);
        this.#o.log.warn({ event: "task_dispatch_failed", group, code: e.code, err: e.message });
        if (e.code === "deposed") throw e;
      }
    }
    return out;
  }

  /**
   * A worker's TaskUpdate. Accepted only for the task's current attempt from the worker
   * it went to; anything else is dropped and counted in `stats.stale`. A result larger
   * than --max-task-bytes fails the task for good (it could never be stored).
   */
  async report(
    group: string,
    id: string,
    u: Omit<WorkerReport, "result"> & { readonly result?: Uint8Array },
  ): Promise<ReportOutcome> {
    this.#checkOpen();
    const g = await this.group(group);
    return this.#serial(group, id, async () => {
      let report: WorkerReport = { ...u, result: undefined };
      if (u.state === "succeeded" && u.result !== undefined) {
        if (u.result.byteLength > this.#o.options.maxTaskBytes)
          report = {
            ...u,
            result: undefined,
            state: "failed",
            retryable: false,
            message: `result of ${u.result.byteLength} bytes is over --max-task-bytes (${this.#o.options.maxTaskBytes})`,
          };
        else report = { ...u, result: encodeBlob(u.result) };
      }
      const before = g.queue.get(id)?.record;
      const out = applyReport(before, report, this.#ctx());
      if (!out.accepted) {
        this.stats.stale[out.reason] += 1;
        this.#o.log.info({
          event: "task_update_stale",
          group,
          task: id,
          worker: u.worker,
          attempt: u.attempt,
          reason: out.reason,
        });
        return out;
      }
      if (out.durable) await this.#persist(g, { kind: "update", record: out.record });
      else {
        if (out.record !== before) g.queue.apply(out.record);
        if (out.progress !== undefined) g.queue.setProgress(id, out.progress.fraction, out.progress.message);
        this.#publish(g, id, out.record);
      }
      this.#count(out.record, before);
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
    this.#checkOpen();
    const g = await this.group(group);
    const targets = ids ?? g.queue.onWorker(nodeId);
    await Promise.all(
      targets.map((id) =>
        this.#serial(group, id, async () => {
          const before = g.queue.get(id)?.record;
          if (before === undefined || !attemptInFlight(before) || before.worker !== nodeId) return;
          const record = workerLost(before, message, this.#ctx());
          await this.#persist(g, { kind: "update", record });
          this.#count(record, before);
        }),
      ),
    );
  }

  /** Attempts in flight past their timeout: the dispatcher sends each worker CANCEL_TASK. */
  overdue(group: string): TaskRecord[] {
    const q = this.#loaded.get(group)?.queue;
    if (q === undefined) return [];
    const now = this.#now();
    const out: TaskRecord[] = [];
    for (const t of q.unfinishedTasks()) if (attemptTimedOut(t.record, now)) out.push(t.record);
    return out;
  }

  #count(after: TaskRecord, before: TaskRecord | undefined): void {
    if (before?.state === after.state && before.attempt === after.attempt) return;
    if (after.state === "succeeded") this.stats.succeeded += 1;
    else if (after.state === "failed") this.stats.failed += 1;
    else if (after.state === "cancelled") this.stats.cancelled += 1;
    else if (after.state === "queued") {
      this.stats.requeued += 1;
      this.#o.onWaiting?.(after.group);
    }
  }

  /** Ends every watch (UNAVAILABLE: the next leader serves them) and refuses new calls. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const g of this.#loaded.values()) g.log.close();
    await Promise.all([...this.#chains.values()]);
  }
}
