import { requestCancel } from "./attempts.js";
import { TaskAttempts } from "./task-attempts.js";
import { TaskError } from "./task-error.js";
import type { SubmitOutcome, TaskHost, TaskListPage, TaskSubmission, WatchBatch } from "./task-host.js";
import { type GroupTasks, type TaskBoardStats, TaskLedger, type TaskLedgerOptions } from "./task-ledger.js";
import type { TaskQueue } from "./task-queue.js";
import {
  generateTaskId,
  payloadDigest,
  type TaskRecord,
  type TaskStateName,
  type TaskView,
} from "./task-record.js";
import { watchGroup } from "./task-watch.js";

/** Options of {@link TaskBoard}. */
export interface TaskBoardOptions extends TaskLedgerOptions {
  /** A client cancelled a task in flight: the dispatcher sends CANCEL_TASK to `record.worker`. */
  readonly onCancel?: (group: string, record: TaskRecord) => void;
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
 * The leader's tasks: what the task service calls ({@link TaskHost}: submit, get, list,
 * cancel, watch) and, in {@link attempts}, what the dispatcher drives. One per leadership:
 * built when the replica starts leading, closed when it stops.
 *
 * Every change is a record made by the pure rules of attempts.ts, written through the
 * persistence (the fenced, batched TaskStore), and only then replayed into the group's
 * queue and published to watchers; a failover's load replays through the same queue.
 *
 * @example
 * ```ts
 * const board = new TaskBoard({ persistence: store, epoch, options, log, onWaiting: (g) => dispatcher.kick(g) });
 * addTaskService(server, () => (leading ? { host: board } : { leader }), { signal, log, limits: options });
 * // on losing the leadership:
 * await board.close();
 * ```
 */
export class TaskBoard implements TaskHost {
  readonly #o: TaskBoardOptions;
  readonly #l: TaskLedger;
  /** The attempt side, for the dispatcher. */
  readonly attempts: TaskAttempts;

  constructor(o: TaskBoardOptions) {
    this.#o = o;
    this.#l = new TaskLedger(o);
    this.attempts = new TaskAttempts(this.#l);
  }

  get epoch(): number {
    return this.#o.epoch;
  }

  /** Counters for metrics. */
  get stats(): Readonly<TaskBoardStats> {
    return this.#l.stats;
  }

  /** The group's tasks, loading them on first use (the dispatcher calls it when a worker of the group joins). */
  group(group: string): Promise<GroupTasks> {
    return this.#l.group(group);
  }

  /** The group's queue if it is loaded (placement rounds must not wait). */
  loaded(group: string): TaskQueue | undefined {
    return this.#l.loaded(group)?.queue;
  }

  async submit(
    group: string,
    tasks: readonly TaskSubmission[],
    _signal: AbortSignal,
  ): Promise<SubmitOutcome[]> {
    const l = this.#l;
    l.checkOpen();
    const g = await l.group(group);
    const now = l.now();
    const items = tasks.map((s) => ({
      s,
      id: s.id ?? generateTaskId(now),
      digest: payloadDigest(s.payload),
    }));
    l.stats.submitted += items.length;
    l.o.metrics?.taskEvent(group, "submitted", items.length);
    for (let round = 0; ; round++) {
      const existing = await this.#known(group, g, items);
      for (const it of items) {
        const e = existing.get(it.id);
        if (e !== undefined && e.record.payloadSha256 !== it.digest)
          throw new TaskError(
            "already_exists",
            `task ${it.id} exists in group ${group} with a different payload`,
          );
      }
      const fresh = items.filter((it) => !existing.has(it.id));
      // From this check to #create registering the ids nothing awaits: a concurrent submit
      // of the same ids either saw them registered or is seen here, and goes round again.
      if (fresh.some((it) => g.queue.get(it.id) !== undefined || g.creating.has(it.id))) {
        if (round >= 3)
          throw new TaskError("unavailable", "submit raced with concurrent submits of the same ids; retry");
        continue;
      }
      const created =
        fresh.length > 0 ? await this.#create(group, g, now, fresh) : new Map<string, TaskRecord>();
      return items.map((it) => {
        const e = existing.get(it.id);
        if (e !== undefined) return { task: e, created: false };
        // Memory has the freshest state; the record as created if the task already left it.
        const record = created.get(it.id) as TaskRecord;
        return { task: g.queue.get(it.id) ?? { record, progress: undefined }, created: true };
      });
    }
  }

  /**
   * What is known of the submitted ids: in memory, being created by a concurrent submit,
   * or (client-chosen ids only) in the persistence.
   */
  async #known(
    group: string,
    g: GroupTasks,
    items: readonly { readonly s: TaskSubmission; readonly id: string }[],
  ): Promise<Map<string, TaskView>> {
    const existing = new Map<string, TaskView>();
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
      for (const [id, t] of await this.#l.persistence.read(group, unknown))
        existing.set(id, g.queue.get(id) ?? { record: t.record, progress: undefined });
    }
    return existing;
  }

  /**
   * Stores new tasks and returns their records; stores what it can and throws the first
   * failure. Registers the ids as being created before its first await.
   */
  async #create(
    group: string,
    g: GroupTasks,
    now: number,
    fresh: readonly { readonly s: TaskSubmission; readonly id: string; readonly digest: string }[],
  ): Promise<Map<string, TaskRecord>> {
    const l = this.#l;
    l.checkOpen();
    const reservation = g.queue.reserve(fresh.length);
    const iso = new Date(now).toISOString();
    const settle: { resolve: (v: TaskView) => void; reject: (e: unknown) => void }[] = [];
    const records = fresh.map((it): TaskRecord => {
      const { promise, resolve, reject } = Promise.withResolvers<TaskView>();
      promise.catch(() => undefined);
      g.creating.set(it.id, promise);
      settle.push({ resolve, reject });
      return {
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
        leaderEpoch: l.o.epoch,
        payloadBytes: it.s.payload.byteLength,
        payloadSha256: it.digest,
        seq: g.queue.nextSeq(),
        createdAt: iso,
        updatedAt: iso,
      };
    });
    // All at once: the store puts them into as few transactions as its limits allow.
    const results = await Promise.allSettled(
      fresh.map((it, i) =>
        l.persist(g, { kind: "create", record: records[i] as TaskRecord, payload: it.s.payload }),
      ),
    );
    reservation.release();
    let failure: unknown;
    let stored = 0;
    fresh.forEach((it, i) => {
      const r = results[i];
      const s = settle[i];
      if (r?.status === "fulfilled") {
        stored += 1;
        s?.resolve(g.queue.get(it.id) ?? { record: records[i] as TaskRecord, progress: undefined });
      } else {
        failure ??= r?.reason;
        s?.reject(r?.reason);
      }
      g.creating.delete(it.id);
    });
    l.stats.created += stored;
    if (stored > 0) l.o.onWaiting?.(group);
    if (failure !== undefined) throw failure;
    return new Map(records.map((r) => [r.id, r]));
  }

  async get(group: string, id: string, _signal: AbortSignal): Promise<TaskView> {
    this.#l.checkOpen();
    const g = await this.#l.group(group);
    const v = await this.#l.current(group, g, id);
    if (v === undefined) throw new TaskError("not_found", `group ${group} has no task ${id}`);
    return v;
  }

  async list(
    group: string,
    o: { readonly state: TaskStateName | undefined; readonly pageSize: number; readonly pageToken: string },
    _signal: AbortSignal,
  ): Promise<TaskListPage> {
    this.#l.checkOpen();
    const afterId = decodePageToken(o.pageToken);
    const g = await this.#l.group(group);
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
    // unfinished ones. A call scans a bounded number of records: a page may be short.
    const tasks: TaskView[] = [];
    let cursor = afterId;
    let more = true;
    for (let scanned = 0; more && tasks.length < o.pageSize && scanned < 10 * o.pageSize; ) {
      const page = await this.#l.persistence.scan(group, {
        afterId: cursor,
        limit: o.pageSize - tasks.length,
      });
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
    const l = this.#l;
    l.checkOpen();
    const g = await l.group(group);
    return l.serial(group, id, async () => {
      const v = await l.current(group, g, id);
      if (v === undefined) throw new TaskError("not_found", `group ${group} has no task ${id}`);
      const out = requestCancel(v.record, l.ctx());
      if (out.durable) {
        await l.persist(g, { kind: "update", record: out.record });
        l.count(out.record, v.record);
      }
      if (out.command) {
        l.o.log.info({ event: "task_cancel_requested", group, task: id, worker: out.record.worker, reason });
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
    this.#l.checkOpen();
    const g = await this.#l.group(group);
    yield* watchGroup({
      group,
      ids: o.ids,
      cursor: o.cursor,
      signal,
      log: g.log,
      queue: g.queue,
      persistence: this.#l.persistence,
    });
    if (!signal.aborted)
      throw new TaskError("unavailable", "this replica no longer leads; reconnect to the leader");
  }

  /** Ends every watch (UNAVAILABLE: the next leader serves them) and refuses new calls. Safe to call twice. */
  close(): Promise<void> {
    return this.#l.close();
  }
}
