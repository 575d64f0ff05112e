/**
 * Where waiting tasks go: a pure function from the waiting tasks (in lanes) and what the
 * workers report to a list of (task, worker) decisions. No I/O, no clock, no randomness:
 * the same input always gives the same placement, and the properties below are tested on
 * random inputs (placement.test.ts).
 *
 * - A worker never gets more tasks than its free slots (`slots - running`); nothing is
 *   prefetched beyond them (Celery's prefetch hoarding is the counter-example).
 * - Tasks are considered in priority order (1 first), FIFO (by `seq`) within a priority.
 * - `balanced`: among accepting workers whose labels carry every selector entry and that
 *   have a free slot, the best one: lowest running/slots, then most slots, then CPU,
 *   event-loop delay, memory, queue length, node id.
 * - `shard`: the owner of the task's shard in the active version, only while that shard
 *   is not moving (a pending version changes its owner) and the owner has a free slot.
 * - Work-conserving: when a task stays waiting, none of the workers that may run it has a
 *   free slot left; and a task is never skipped in favour of a later one that went to a
 *   worker the earlier one could have used.
 *
 * Lanes make this cheap with a long backlog: the tasks of one lane share one set of
 * candidate workers (one selector, or one shard), so when a lane's first task finds no
 * free candidate, the rest of the lane cannot either and the lane is skipped whole.
 */

/** What placement needs to know of one group member, from its Hello and heartbeats. */
export interface PlacementWorker {
  readonly nodeId: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Task slots (Hello.capacity; 0 means none). */
  readonly slots: number;
  /** Tasks dispatched to it or running on it now. */
  readonly running: number;
  /** Process CPU, percent of one core (Heartbeat.cpu_percent). */
  readonly cpuPercent: number;
  /** Event-loop delay p99, ms. */
  readonly eventLoopDelayMs: number;
  /** Resident set size, bytes. */
  readonly memoryRssBytes: number;
  /** Tasks it queued and has not started. */
  readonly queueLength: number;
  /** False when it must get nothing new (draining, fenced, an incarnation not yet proven). */
  readonly accepting: boolean;
}

/** The shard map of the group's active version, for `shard` placement. */
export interface ShardOwnership {
  /** The active version these owners belong to. */
  readonly version?: number;
  readonly totalShards: number;
  /** Owner of each shard in the active version. */
  readonly owners: ReadonlyMap<number, string>;
  /** Shards whose owner a pending version changes: their tasks wait. */
  readonly moving: ReadonlySet<number>;
}

/** One waiting task, as placement sees it. */
export interface PlacementTask {
  readonly id: string;
  /** 1 (highest) to 5. */
  readonly priority: number;
  /** Submission order within the group. */
  readonly seq: number;
}

/**
 * Waiting tasks sharing one set of candidate workers, in (priority, seq) order. The
 * iterable is consumed lazily, only as far as tasks are placed.
 */
export type PlacementLane =
  | {
      readonly kind: "balanced";
      readonly selector: Readonly<Record<string, string>>;
      readonly tasks: Iterable<PlacementTask>;
    }
  | { readonly kind: "shard"; readonly shard: number; readonly tasks: Iterable<PlacementTask> };

/** Run `taskId` on `nodeId`. */
export interface PlacementDecision {
  readonly taskId: string;
  readonly nodeId: string;
  /** The shard, for `shard` placement. */
  readonly shard?: number;
}

/** Whether `labels` carries every entry of `selector`. */
export function matchesSelector(
  labels: Readonly<Record<string, string>>,
  selector: Readonly<Record<string, string>>,
): boolean {
  for (const [k, v] of Object.entries(selector))
    if (!Object.hasOwn(labels, k) || labels[k] !== v) return false;
  return true;
}

/** (priority, seq) order: negative when `a` goes first. */
export function compareTasks(a: PlacementTask, b: PlacementTask): number {
  return a.priority - b.priority || a.seq - b.seq;
}

interface Slot {
  readonly w: PlacementWorker;
  readonly slots: number;
  running: number;
  free: number;
}

/** Negative when `a` is the better worker for the next task. */
function compareSlots(a: Slot, b: Slot): number {
  // Cross-multiplied running/slots: exact, no float ties broken by rounding.
  return (
    a.running * b.slots - b.running * a.slots ||
    // Equally loaded: the one with more slots, whose load grows least by one task (1/slots),
    // so small workers are not the first pick every time the group is idle.
    b.slots - a.slots ||
    a.w.cpuPercent - b.w.cpuPercent ||
    a.w.eventLoopDelayMs - b.w.eventLoopDelayMs ||
    a.w.memoryRssBytes - b.w.memoryRssBytes ||
    a.w.queueLength - b.w.queueLength ||
    (a.w.nodeId < b.w.nodeId ? -1 : a.w.nodeId > b.w.nodeId ? 1 : 0)
  );
}

interface OpenLane {
  readonly candidates: readonly Slot[];
  readonly shard: number | undefined;
  readonly it: Iterator<PlacementTask>;
  head: PlacementTask;
}

/** A binary min-heap of lanes by their head task. */
class LaneHeap {
  readonly #a: OpenLane[] = [];
  get size(): number {
    return this.#a.length;
  }
  push(l: OpenLane): void {
    const a = this.#a;
    a.push(l);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (compareTasks((a[i] as OpenLane).head, (a[p] as OpenLane).head) >= 0) break;
      [a[i], a[p]] = [a[p] as OpenLane, a[i] as OpenLane];
      i = p;
    }
  }
  pop(): OpenLane | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && compareTasks((a[l] as OpenLane).head, (a[m] as OpenLane).head) < 0) m = l;
      if (r < a.length && compareTasks((a[r] as OpenLane).head, (a[m] as OpenLane).head) < 0) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m] as OpenLane, a[i] as OpenLane];
      i = m;
    }
    return top;
  }
}

/**
 * Places as many waiting tasks as free slots allow (at most `limit`).
 *
 * @example
 * ```ts
 * const decisions = placeTasks(queue.lanes(), workers, shardMap);
 * for (const d of decisions) dispatch(d.taskId, d.nodeId);
 * ```
 */
export function placeTasks(
  lanes: Iterable<PlacementLane>,
  workers: readonly PlacementWorker[],
  shards?: ShardOwnership,
  limit: number = Number.POSITIVE_INFINITY,
): PlacementDecision[] {
  const slots: Slot[] = [];
  const byNode = new Map<string, Slot>();
  let totalFree = 0;
  for (const w of workers) {
    const n = Number.isFinite(w.slots) ? Math.max(0, Math.floor(w.slots)) : 0;
    const running = Math.max(0, Math.floor(w.running));
    const free = w.accepting ? Math.max(0, n - running) : 0;
    const s: Slot = { w, slots: Math.max(1, n), running, free };
    slots.push(s);
    byNode.set(w.nodeId, s);
    totalFree += free;
  }
  const out: PlacementDecision[] = [];
  if (totalFree === 0 || limit <= 0) return out;

  const heap = new LaneHeap();
  for (const lane of lanes) {
    let candidates: Slot[];
    let shard: number | undefined;
    if (lane.kind === "shard") {
      shard = lane.shard;
      const owner =
        shards !== undefined && shard >= 0 && shard < shards.totalShards && !shards.moving.has(shard)
          ? shards.owners.get(shard)
          : undefined;
      const s = owner === undefined ? undefined : byNode.get(owner);
      candidates = s === undefined ? [] : [s];
    } else {
      candidates = slots.filter((s) => matchesSelector(s.w.labels, lane.selector));
    }
    if (!candidates.some((s) => s.free > 0)) continue;
    const it = lane.tasks[Symbol.iterator]();
    const first = it.next();
    if (first.done === true) continue;
    heap.push({ candidates, shard, it, head: first.value });
  }

  while (heap.size > 0 && totalFree > 0 && out.length < limit) {
    const lane = heap.pop() as OpenLane;
    let best: Slot | undefined;
    for (const s of lane.candidates)
      if (s.free > 0 && (best === undefined || compareSlots(s, best) < 0)) best = s;
    // No free candidate: the lane's later tasks share its candidates, so drop it whole.
    if (best === undefined) continue;
    out.push(
      lane.shard === undefined
        ? { taskId: lane.head.id, nodeId: best.w.nodeId }
        : { taskId: lane.head.id, nodeId: best.w.nodeId, shard: lane.shard },
    );
    best.free -= 1;
    best.running += 1;
    totalFree -= 1;
    if (totalFree === 0 || out.length >= limit) break;
    const next = lane.it.next();
    if (next.done !== true) {
      lane.head = next.value;
      heap.push(lane);
    }
  }
  return out;
}
