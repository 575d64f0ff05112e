import { diffOwners, type MemberSpec, type Plan, planAssignment, type StrategyName } from "@org/coordinator";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";

/** Shards of sticky groups here; with fewer shards than members most members own nothing. */
const STICKY_SHARDS = 4096;
/** Items whose movement is counted (item i lives in shard i % totalShards, as the SDK's owns() does). */
const ITEMS = 100_000;

const members = (n: number): MemberSpec[] =>
  Array.from({ length: n }, (_, i) => ({ nodeId: `w-${String(i).padStart(5, "0")}`, capacity: 1 }));

function plan(strategy: StrategyName, ms: readonly MemberSpec[], previous?: Plan): Plan {
  return planAssignment({ strategy, members: ms, shardCount: STICKY_SHARDS, previous });
}

/** Owner of each item; under modulo an item's shard changes with the member count. */
function itemOwners(p: Plan): string[] {
  const ownerOfShard: string[] = new Array(p.totalShards).fill("");
  for (const [node, shards] of Object.entries(p.owners)) for (const s of shards) ownerOfShard[s] = node;
  return Array.from({ length: ITEMS }, (_, i) => ownerOfShard[i % p.totalShards] ?? "");
}

function measure(strategy: StrategyName, before: Plan, after: Plan): { shards: number; items: number } {
  const d = diffOwners(before, after);
  const a = itemOwners(before);
  const b = itemOwners(after);
  let movedItems = 0;
  for (let i = 0; i < ITEMS; i++) if (a[i] !== b[i]) movedItems++;
  const total = strategy === "sticky" ? STICKY_SHARDS : Math.max(before.totalShards, after.totalShards);
  return { shards: d.moved / total, items: movedItems / ITEMS };
}

/**
 * The fraction of work that moves on one join and on one leave, from the planner itself
 * (pure, no processes). "shards" compares shard ids literally; "items" is what really moves:
 * under modulo a change of totalShards re-partitions every item, whatever the shard ids say.
 */
export async function benchChurn(rep: Reporter, _smoke: boolean): Promise<void> {
  const rows: Row[] = [];
  for (const strategy of ["sticky", "modulo"] as const) {
    for (const n of [10, 100, 1000]) {
      const base = members(n);
      const p0 = plan(strategy, base);
      // Join: a node id that sorts in the middle, the case where modulo shifts the most.
      const joiner = { nodeId: `w-${String(Math.floor(n / 2)).padStart(5, "0")}-j`, capacity: 1 };
      const join = measure(strategy, p0, plan(strategy, [...base, joiner], p0));
      const leaver = base[Math.floor(n / 2)]?.nodeId;
      const leave = measure(
        strategy,
        p0,
        plan(
          strategy,
          base.filter((m) => m.nodeId !== leaver),
          p0,
        ),
      );
      rows.push({
        strategy,
        members: n,
        "join: shards moved": round(join.shards, 4),
        "join: items moved": round(join.items, 4),
        "join ideal": round(1 / (n + 1), 4),
        "leave: shards moved": round(leave.shards, 4),
        "leave: items moved": round(leave.items, 4),
        "leave ideal": round(1 / n, 4),
      });
    }
  }
  rep.table({
    measurement: "churn",
    title: "Churn: fraction of work that moves on one membership change",
    settings: { stickyShards: STICKY_SHARDS, items: ITEMS, joinerAndLeaver: "middle of the node-id order" },
    rows,
    notes: [
      "ideal = the share one member owns (1/(n+1) on join, 1/n on leave): the least any strategy can move.",
    ],
  });
}
