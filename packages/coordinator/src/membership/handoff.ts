/**
 * The cooperative handoff of a new version (pure). A version is written *pending*; it becomes
 * *active*, and gainers may start, only when nobody can still be running a shard it moves:
 * - a member whose live incarnation may run shards it loses must `Release` them (it is
 *   *awaited*; one that does not is expelled, and then it counts as gone, below);
 * - an incarnation that cannot release (gone: expelled, lease lost, superseded by a new
 *   process of the same node id) stops by itself at its fence; the version waits for it
 *   (`fencesUntil`).
 * When ownership is unknown (the assignment record was lost or corrupt, or a worker shows a
 * version from a history we do not have), every member is treated as running everything.
 */

/** What a node id may be running now, from the leader's point of view. */
export type MemberRun =
  /** Its live incarnation may run the shards `before` gives it. */
  | { readonly kind: "running" }
  /** It provably runs nothing (stopped for a planned restart). */
  | { readonly kind: "stopped" }
  /** Its live incarnation runs nothing yet; an earlier one may run until `until`. */
  | { readonly kind: "waiting"; readonly until: number }
  /** Not a member any more; an incarnation may run until `until` (−Infinity: none). */
  | { readonly kind: "gone"; readonly until: number };

/** The ownership a version gives (what the planner produced or the record says). */
export interface Ownership {
  readonly totalShards: number;
  readonly strategy: string;
  readonly owners: Readonly<Record<string, readonly number[]>>;
}

export interface HandoffInput {
  /** The version in force before (undefined: none). */
  readonly before: Ownership | undefined;
  readonly next: Ownership;
  /** What each member runs is not known (see the module comment). */
  readonly unknownOwnership: boolean;
  /** Every current member's node id. */
  readonly members: readonly string[];
  readonly state: (nodeId: string) => MemberRun;
  /** With unknown ownership: until when node ids we cannot name (gone before we led) may run. */
  readonly unknownGoneUntil: number;
}

export interface HandoffPlan {
  /** Members that must Release before the version may activate, sorted. */
  readonly awaiting: string[];
  /** The version may not activate before this (monotonic ms; −Infinity: no wait). */
  readonly fencesUntil: number;
}

/** Who must release, and which fences the version must outwait. */
export function planHandoff(input: HandoffInput): HandoffPlan {
  const { before, next } = input;
  const awaiting = new Set<string>();
  let fencesUntil = Number.NEGATIVE_INFINITY;
  const losing = (nodeId: string): void => {
    const s = input.state(nodeId);
    if (s.kind === "running") awaiting.add(nodeId);
    else if (s.kind === "waiting" || s.kind === "gone") fencesUntil = Math.max(fencesUntil, s.until);
  };
  if (input.unknownOwnership) {
    for (const nodeId of input.members) losing(nodeId);
    fencesUntil = Math.max(fencesUntil, input.unknownGoneUntil);
  }
  if (before !== undefined) {
    // Shard ids keep their meaning only while the shard count and strategy stay the same.
    const reshaped = before.totalShards !== next.totalShards || before.strategy !== next.strategy;
    for (const [nodeId, shards] of Object.entries(before.owners)) {
      if (shards.length === 0) continue;
      const keep = new Set(Object.hasOwn(next.owners, nodeId) ? next.owners[nodeId] : []);
      if (reshaped || shards.some((s) => !keep.has(s))) losing(nodeId);
    }
  }
  return { awaiting: [...awaiting].sort(), fencesUntil };
}

/** Whether a pending version may become active at `now`. */
export function mayActivate(
  awaiting: ReadonlySet<string> | readonly string[],
  fencesUntil: number,
  now: number,
): boolean {
  const size = Array.isArray(awaiting) ? awaiting.length : (awaiting as ReadonlySet<string>).size;
  return size === 0 && now >= fencesUntil;
}
