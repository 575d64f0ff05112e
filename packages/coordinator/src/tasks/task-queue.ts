import { shardOf } from "@org/proto";
import type { PlacementLane, PlacementTask } from "./placement.js";
import { TaskError } from "./task-error.js";
import {
  isFinalState,
  type TaskRecord,
  type TaskStateName,
  type TaskView,
  taskStates,
} from "./task-record.js";

/** A task in the leader's memory. */
export type QueuedTask = TaskView;

/** Options of {@link TaskQueue}. */
export interface TaskQueueOptions {
  readonly group: string;
  /** Unfinished tasks the group may hold (`--max-queued-tasks`). */
  readonly maxQueuedTasks: number;
  /** Finished tasks kept in memory, oldest dropped first (they stay readable in etcd). */
  readonly recentFinished: number;
}

/** A waiting task's place in its lane. */
interface LaneNode extends PlacementTask {
  live: boolean;
}

interface Entry {
  record: TaskRecord;
  progress: { fraction: number; message: string } | undefined;
  /** Set while the task waits in a lane. */
  node: LaneNode | undefined;
  lane: Lane | undefined;
}

/** Waiting tasks that share candidates (one selector, or one shard), FIFO per priority. */
class Lane {
  readonly key: string;
  readonly placement: PlacementLane;
  // One array per priority, ascending by seq. Removed nodes stay as tombstones until the
  // head passes them or a compaction drops them, so removal is O(1).
  readonly #buckets: LaneNode[][] = [[], [], [], [], []];
  readonly #heads = [0, 0, 0, 0, 0];
  #dead = 0;
  size = 0;

  constructor(
    key: string,
    kind: { kind: "balanced"; selector: Record<string, string> } | { kind: "shard"; shard: number },
  ) {
    this.key = key;
    const tasks = { [Symbol.iterator]: () => this.#iterate() };
    this.placement = kind.kind === "balanced" ? { ...kind, tasks } : { ...kind, tasks };
  }

  insert(node: LaneNode): void {
    const b = this.#buckets[node.priority - 1] as LaneNode[];
    const last = b[b.length - 1];
    if (last === undefined || last.seq < node.seq) b.push(node);
    else {
      // A requeued task keeps its submission order: it goes before later submissions.
      let lo = this.#heads[node.priority - 1] as number;
      let hi = b.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((b[mid] as LaneNode).seq < node.seq) lo = mid + 1;
        else hi = mid;
      }
      b.splice(lo, 0, node);
    }
    this.size += 1;
  }

  remove(node: LaneNode): void {
    node.live = false;
    this.size -= 1;
    this.#dead += 1;
    const p = node.priority - 1;
    const b = this.#buckets[p] as LaneNode[];
    let h = this.#heads[p] as number;
    while (h < b.length && !(b[h] as LaneNode).live) {
      h += 1;
      this.#dead -= 1;
    }
    if (h === b.length) {
      b.length = 0;
      h = 0;
    } else if (h > 1024 && h * 2 > b.length) {
      b.splice(0, h);
      h = 0;
    }
    this.#heads[p] = h;
    if (this.#dead > 1024 && this.#dead > this.size) this.#compact();
  }

  #compact(): void {
    for (let p = 0; p < 5; p++) {
      const b = this.#buckets[p] as LaneNode[];
      this.#buckets[p] = b.slice(this.#heads[p]).filter((n) => n.live);
      this.#heads[p] = 0;
    }
    this.#dead = 0;
  }

  *#iterate(): Generator<PlacementTask> {
    for (let p = 0; p < 5; p++) {
      const b = this.#buckets[p] as LaneNode[];
      for (let i = this.#heads[p] as number; i < b.length; i++) {
        const n = b[i] as LaneNode;
        if (n.live) yield n;
      }
    }
  }
}

function selectorKey(selector: Readonly<Record<string, string>>): string {
  return JSON.stringify(Object.entries(selector).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * One group's tasks in the leader's memory: every unfinished task, the most recent
 * finished ones, the waiting ones in placement lanes, and the ones in flight per worker.
 *
 * Memory is only ever changed by replaying records ({@link apply}): the records the
 * leader just wrote, and on failover the records it loaded, go through the same path
 * (STYLE.md 15), so what the queue holds is what etcd holds, plus progress.
 *
 * @example
 * ```ts
 * const q = new TaskQueue({ group: "g", maxQueuedTasks: 100_000, recentFinished: 10_000 });
 * for (const r of loaded) q.apply(r);
 * const decisions = placeTasks(q.lanes(), workers);
 * ```
 */
export class TaskQueue {
  readonly #o: TaskQueueOptions;
  readonly #tasks = new Map<string, Entry>();
  readonly #lanes = new Map<string, Lane>();
  readonly #byWorker = new Map<string, Set<string>>();
  /** Finished tasks in memory, oldest first. */
  readonly #finished = new Set<string>();
  readonly #counts = new Map<TaskStateName, number>(taskStates.map((s) => [s, 0]));
  #unfinished = 0;
  #reserved = 0;
  #totalShards = 0;
  #maxSeq = 0;
  #sortedUnfinished: string[] | undefined;
  /** The last few failures replayed, newest last (for the console). */
  readonly #failures: { id: string; worker: string | null; error: string }[] = [];

  constructor(o: TaskQueueOptions) {
    this.#o = o;
  }

  get group(): string {
    return this.#o.group;
  }

  /** Unfinished tasks (queued, dispatched, running). */
  get unfinished(): number {
    return this.#unfinished;
  }

  /** Tasks in memory per state (finished ones: only those still in memory). */
  counts(): Readonly<Record<TaskStateName, number>> {
    return Object.fromEntries(this.#counts) as Record<TaskStateName, number>;
  }

  /** The latest failed tasks replayed (at most 10), newest first. */
  latestFailures(): readonly {
    readonly id: string;
    readonly worker: string | null;
    readonly error: string;
  }[] {
    return [...this.#failures].reverse();
  }

  /** The next submission sequence number (above every one replayed so far). */
  nextSeq(): number {
    this.#maxSeq += 1;
    return this.#maxSeq;
  }

  get(id: string): QueuedTask | undefined {
    return this.#tasks.get(id);
  }

  /**
   * Holds room for `n` new tasks until `release()`, so concurrent submits cannot together
   * overfill the group. Throws TaskError("resource_exhausted") when there is no room.
   */
  reserve(n: number): { release(): void } {
    if (this.#unfinished + this.#reserved + n > this.#o.maxQueuedTasks)
      throw new TaskError(
        "resource_exhausted",
        `group ${this.#o.group} holds ${this.#unfinished} unfinished tasks (limit ${this.#o.maxQueuedTasks}); ${n} more do not fit`,
      );
    this.#reserved += n;
    let held = true;
    return {
      release: () => {
        if (held) this.#reserved -= n;
        held = false;
      },
    };
  }

  /**
   * Replays a record: the task's new state in memory. A record older than the one held
   * (a smaller `updatedAt` with the same attempt...) is still applied: the caller replays
   * in write order.
   */
  apply(record: TaskRecord): void {
    const id = record.id;
    let e = this.#tasks.get(id);
    if (e === undefined) {
      e = { record, progress: undefined, node: undefined, lane: undefined };
      this.#tasks.set(id, e);
      this.#sortedUnfinished = undefined;
    } else {
      this.#leave(e);
      if (e.record.attempt !== record.attempt || record.state !== "running") e.progress = undefined;
      e.record = record;
    }
    this.#enter(e);
    if (record.seq > this.#maxSeq) this.#maxSeq = record.seq;
  }

  /** Records progress of a running task (memory only). False when it is not running. */
  setProgress(id: string, fraction: number, message: string): boolean {
    const e = this.#tasks.get(id);
    if (e === undefined || e.record.state !== "running") return false;
    e.progress = { fraction, message };
    return true;
  }

  /** Drops a task from memory (a finished one whose retention ran out, say). */
  forget(id: string): void {
    const e = this.#tasks.get(id);
    if (e === undefined) return;
    this.#leave(e);
    this.#tasks.delete(id);
    this.#sortedUnfinished = undefined;
  }

  /** Tells the queue the active version's shard count; shard lanes are rebuilt when it changes. */
  setTotalShards(n: number): void {
    if (n === this.#totalShards) return;
    this.#totalShards = n;
    for (const e of this.#tasks.values()) {
      if (e.node !== undefined && e.record.placement === "shard") {
        this.#leave(e);
        this.#enter(e);
      }
    }
  }

  /** The waiting tasks by lane, for {@link placeTasks}. */
  lanes(): Iterable<PlacementLane> {
    const lanes = this.#lanes;
    return {
      *[Symbol.iterator]() {
        for (const l of lanes.values()) yield l.placement;
      },
    };
  }

  /** Waiting tasks. */
  get waiting(): number {
    return this.#counts.get("queued") ?? 0;
  }

  /** Ids of the tasks dispatched to or running on `nodeId`. */
  onWorker(nodeId: string): readonly string[] {
    return [...(this.#byWorker.get(nodeId) ?? [])];
  }

  /** Tasks in flight on `nodeId`: what placement counts against its slots. */
  runningOn(nodeId: string): number {
    return this.#byWorker.get(nodeId)?.size ?? 0;
  }

  /** Every unfinished task, in no particular order. */
  *unfinishedTasks(): Generator<QueuedTask> {
    for (const e of this.#tasks.values()) if (!isFinalState(e.record.state)) yield e;
  }

  /**
   * Unfinished tasks ascending by id, after `afterId`, optionally of one state: a page of
   * at most `limit`, and whether more may follow.
   */
  listUnfinished(o: { state?: TaskStateName; afterId: string; limit: number }): {
    tasks: QueuedTask[];
    more: boolean;
  } {
    if (this.#sortedUnfinished === undefined) {
      this.#sortedUnfinished = [...this.#tasks.values()]
        .filter((e) => !isFinalState(e.record.state))
        .map((e) => e.record.id)
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    }
    const ids = this.#sortedUnfinished;
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((ids[mid] as string) <= o.afterId) lo = mid + 1;
      else hi = mid;
    }
    const tasks: QueuedTask[] = [];
    for (let i = lo; i < ids.length; i++) {
      const e = this.#tasks.get(ids[i] as string);
      // The cache is rebuilt only when tasks are added or dropped; a task may have
      // finished since.
      if (e === undefined || isFinalState(e.record.state)) continue;
      if (o.state !== undefined && e.record.state !== o.state) continue;
      if (tasks.length === o.limit) return { tasks, more: true };
      tasks.push(e);
    }
    return { tasks, more: false };
  }

  #laneOf(r: TaskRecord): Lane {
    let key: string;
    let kind: ConstructorParameters<typeof Lane>[1];
    if (r.placement === "shard") {
      const shard = this.#totalShards > 0 ? shardOf(r.id, this.#totalShards) : -1;
      key = `s:${shard}`;
      kind = { kind: "shard", shard };
    } else {
      key = `b:${selectorKey(r.selector)}`;
      kind = { kind: "balanced", selector: r.selector };
    }
    let lane = this.#lanes.get(key);
    if (lane === undefined) {
      lane = new Lane(key, kind);
      this.#lanes.set(key, lane);
    }
    return lane;
  }

  /** Adds `e` to the indexes its record belongs in. */
  #enter(e: Entry): void {
    const r = e.record;
    this.#counts.set(r.state, (this.#counts.get(r.state) ?? 0) + 1);
    if (isFinalState(r.state)) {
      if (r.state === "failed" && !this.#failures.some((f) => f.id === r.id)) {
        this.#failures.push({ id: r.id, worker: r.worker, error: r.error?.message ?? "" });
        if (this.#failures.length > 10) this.#failures.shift();
      }
      this.#finished.add(r.id);
      while (this.#finished.size > this.#o.recentFinished) {
        const oldest = this.#finished.values().next().value as string;
        this.forget(oldest);
      }
      return;
    }
    this.#unfinished += 1;
    if (r.state === "queued") {
      const node: LaneNode = { id: r.id, priority: r.priority, seq: r.seq, live: true };
      const lane = this.#laneOf(r);
      lane.insert(node);
      e.node = node;
      e.lane = lane;
    } else if (r.worker !== null) {
      let s = this.#byWorker.get(r.worker);
      if (s === undefined) {
        s = new Set();
        this.#byWorker.set(r.worker, s);
      }
      s.add(r.id);
    }
  }

  /** Removes `e` from every index (its record is about to change, or it is dropped). */
  #leave(e: Entry): void {
    const r = e.record;
    this.#counts.set(r.state, (this.#counts.get(r.state) ?? 0) - 1);
    if (isFinalState(r.state)) {
      this.#finished.delete(r.id);
      return;
    }
    this.#unfinished -= 1;
    if (e.node !== undefined && e.lane !== undefined) {
      e.lane.remove(e.node);
      if (e.lane.size === 0) this.#lanes.delete(e.lane.key);
      e.node = undefined;
      e.lane = undefined;
    }
    if (r.worker !== null) {
      const s = this.#byWorker.get(r.worker);
      s?.delete(r.id);
      if (s?.size === 0) this.#byWorker.delete(r.worker);
    }
  }
}
