import type { GroupSnapshot } from "../membership/group.js";
import type { TaskQueue } from "../tasks/task-queue.js";
import type { ConsoleGroup, ConsoleMember, TimelineSegment } from "./console-view.js";

/** shard id → owner, from an `owners` map of node id → shard ids. */
export function ownerArray(
  owners: Readonly<Record<string, readonly number[]>>,
  total: number,
): (string | null)[] {
  const out: (string | null)[] = Array.from({ length: total }, () => null);
  for (const [node, shards] of Object.entries(owners)) for (const s of shards) if (s < total) out[s] = node;
  return out;
}

/**
 * Who runs each shard right now: the owner of the active version; while a version is
 * pending, only the shards that keep their owner (the others are between owners: the
 * previous one releases, the next one starts once the version activates).
 */
export function runningOwners(snapshot: GroupSnapshot): (string | null)[] {
  const a = snapshot.assignment;
  if (a === undefined) return [];
  const next = ownerArray(a.owners, a.totalShards);
  if (a.phase === "active") return next;
  const prev = ownerArray(a.previousOwners, a.totalShards);
  return next.map((owner, shard) => (owner !== null && prev[shard] === owner ? owner : null));
}

/** The console's view of one group (see {@link ConsoleGroup}). */
export function consoleGroup(
  snapshot: GroupSnapshot,
  tasks: Pick<TaskQueue, "counts" | "latestFailures"> | undefined,
  timeline: readonly (readonly TimelineSegment[])[],
): ConsoleGroup {
  const a = snapshot.assignment;
  const owners = a === undefined ? [] : ownerArray(a.owners, a.totalShards);
  const prev = a === undefined || a.phase === "active" ? owners : ownerArray(a.previousOwners, a.totalShards);
  const moves = owners.flatMap((to, shard) => {
    const from = prev[shard] ?? null;
    return from === to ? [] : [{ shard, from, to }];
  });
  const awaiting = new Set(snapshot.awaitingRelease);
  const released =
    a === undefined || a.phase === "active"
      ? []
      : Object.keys(a.previousOwners)
          .filter((n) => !awaiting.has(n))
          .sort();
  const members: ConsoleMember[] = snapshot.members
    .map((m) => ({
      nodeId: m.nodeId,
      state: m.state,
      connected: m.connected,
      lastHeardMsAgo: m.lastSeenMsAgo,
      capacity: m.capacity,
      labels: m.labels,
      replica: m.replica,
      cpuPercent: m.load.cpuPercent,
      memoryRssBytes: m.load.memoryRssBytes,
      eventLoopDelayMs: m.load.eventLoopDelayMs,
      load: m.load.load,
      runningShards: m.load.runningShards,
      runningTasks: m.load.runningTasks,
      shards: a?.owners[m.nodeId] ?? [],
    }))
    .sort((x, y) => x.nodeId.localeCompare(y.nodeId));
  return {
    group: snapshot.group,
    strategy: a?.strategy ?? null,
    version: a?.version ?? null,
    phase: a?.phase ?? null,
    totalShards: a?.totalShards ?? 0,
    members,
    owners,
    moves,
    awaitingRelease: [...snapshot.awaitingRelease],
    released,
    degraded: { ...snapshot.degraded },
    timeline,
    tasks:
      tasks === undefined
        ? null
        : { counts: { ...tasks.counts() }, latestFailures: [...tasks.latestFailures()] },
  };
}
