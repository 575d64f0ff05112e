/** A dispatched attempt that has not started here yet. */
export interface HeldTask {
  readonly id: string;
  readonly attempt: number;
  /** The task's shard with `shard` placement; undefined with `balanced`. */
  readonly shardId: number | undefined;
  /** The assignment version whose owner of `shardId` it was sent to (0: unknown). */
  readonly shardVersion: number;
}

/**
 * Where a shard-placed task's shard (`shardOf(id, totalShards)`) stands on this worker: `runs` (owned, active, the session
 * confirmed), `wait` (ours, or maybe ours, but not running yet: the version is not active, the
 * stability window has not passed, our view is older than the dispatch), `lost` (the latest
 * view, at least as new as the dispatch, gives the shard to someone else).
 */
export type ShardStanding = "runs" | "wait" | "lost";

/** What to do with the held tasks now. */
export interface SlotPlan {
  /** Start these, in this order. */
  readonly start: readonly HeldTask[];
  /** Give these back to the leader (report them cancelled): they cannot run here. */
  readonly giveBack: readonly HeldTask[];
}

/**
 * Which held tasks start now, FIFO, without ever running more than `slots` at once: `busy`
 * attempts (running, or aborted and not yet returned) take a slot each, and a task whose
 * previous attempt is still busy here waits for it (two attempts of one task never overlap).
 * A shard-placed task starts only while its shard runs here; one whose shard is lost is given
 * back whatever the free slots.
 *
 * @example
 * ```ts
 * planSlots(held, 2, new Set(["t1"]), () => "runs"); // starts at most one
 * ```
 */
export function planSlots(
  held: readonly HeldTask[],
  slots: number,
  busy: ReadonlySet<string>,
  shard: (task: HeldTask) => ShardStanding,
): SlotPlan {
  let free = Math.max(0, slots - busy.size);
  const start: HeldTask[] = [];
  const giveBack: HeldTask[] = [];
  const starting = new Set<string>();
  for (const t of held) {
    const standing = t.shardId === undefined ? "runs" : shard(t);
    if (standing === "lost") {
      giveBack.push(t);
      continue;
    }
    if (free === 0 || standing === "wait" || busy.has(t.id) || starting.has(t.id)) continue;
    start.push(t);
    starting.add(t.id);
    free -= 1;
  }
  return { start, giveBack };
}
