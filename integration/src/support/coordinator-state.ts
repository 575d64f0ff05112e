import type { AssignmentRecord } from "@org/coordinator";
import type { Etcd3 } from "etcd3";

/** The group's assignment record as the leader wrote it to etcd, or null before the first version. */
export async function readAssignment(
  client: Etcd3,
  namespace: string,
  group: string,
): Promise<AssignmentRecord | null> {
  const raw = await client.get(`${namespace}/groups/${group}/assignment`).string();
  return raw === null ? null : (JSON.parse(raw) as AssignmentRecord);
}

/** Coordinator timing, as the CLI flags of `coordinator serve`. */
export interface CoordinatorTiming {
  readonly leaderTtlSec: number;
  readonly heartbeatIntervalMs: number;
  readonly sessionTimeoutMs: number;
  readonly memberLeaseTtlSec: number;
  readonly rebalanceDelayMs: number;
}

export function coordinatorArgs(t: CoordinatorTiming): string[] {
  return [
    "--leader-ttl",
    String(t.leaderTtlSec),
    "--heartbeat-interval",
    String(t.heartbeatIntervalMs),
    "--session-timeout",
    String(t.sessionTimeoutMs),
    "--member-lease-ttl",
    String(t.memberLeaseTtlSec),
    "--rebalance-delay",
    String(t.rebalanceDelayMs),
  ];
}
