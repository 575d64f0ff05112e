import { type Assignment, AssignmentPhase, type HeartbeatAck } from "@org/proto";
import type { AssignmentView, Phase } from "./ownership.js";

function phaseOf(p: AssignmentPhase): Phase {
  return p === AssignmentPhase.ACTIVE ? "active" : p === AssignmentPhase.PENDING ? "pending" : "none";
}

/** The view an Assignment message (in Welcome, or pushed) announces; the session adds the epoch. */
export function viewOfAssignment(a: Assignment): Omit<AssignmentView, "leaderEpoch"> {
  return {
    version: Number(a.version),
    phase: phaseOf(a.phase),
    totalShards: a.totalShards,
    shards: [...a.shards],
    strategy: a.strategy,
  };
}

/** The view a HeartbeatAck carries (it names no strategy: "" means "as before"). */
export function viewOfAck(a: HeartbeatAck): Omit<AssignmentView, "leaderEpoch"> {
  return {
    version: Number(a.shardVersion),
    phase: phaseOf(a.phase),
    totalShards: a.totalShards,
    shards: [...a.shards],
    strategy: "",
  };
}
