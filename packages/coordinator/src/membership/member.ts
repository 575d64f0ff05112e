import type { MemberRecord } from "../store/records.js";
import type { MemberRun } from "./handoff.js";
import type { LiveIncarnation } from "./incarnation.js";

/** What the last heartbeat said about the worker's load. */
export interface MemberLoad {
  load: number;
  cpuPercent: number;
  memoryRssBytes: number;
  eventLoopDelayMs: number;
  runningTasks: number;
  queueLength: number;
  runningShards: number;
}

/** The attached stream of a member, as the group needs it. */
export interface MemberSession {
  readonly nodeId: string;
  /** True once the stream has ended (its Hello may still be being decided while false). */
  readonly closed: boolean;
}

/**
 * A member on the leader: its record (as in etcd) and what only the leader's memory holds.
 * Times are monotonic ms (`performance.now()`).
 */
export interface Member<S extends MemberSession = MemberSession> {
  record: MemberRecord;
  readonly leaseId: string;
  /** The live incarnation's stream, while one is attached. */
  session: S | undefined;
  /** Last Hello or heartbeat from the live incarnation (expiry counts from here). */
  lastHeard: number;
  /** Last Welcome or ack sent to the live incarnation (its self-fence counts from before it). */
  lastAckSentAt: number;
  /** An earlier incarnation may run until then; the live one may start nothing before. */
  priorFenceUntil: number;
  /** Set when the live incarnation stopped everything for a planned restart. */
  stoppedAt: number | undefined;
  /**
   * Whether the live incarnation was ever shown something it may run (an ACTIVE view, a
   * task) — the only way it can have run anything. A process killed while it still waited
   * ran nothing, and its successor need not outwait it.
   */
  shownRunnable: boolean;
  lastKeepAliveAt: number;
  heardSinceKeepAlive: boolean;
  /** A removal is queued: it gets no more acks and is not planned for. */
  removing: boolean;
  /** Why its etcd record failed validation (its shards stay until its session says otherwise). */
  corrupt: string | undefined;
  load: MemberLoad;
}

export const noLoad: MemberLoad = {
  load: 0,
  cpuPercent: 0,
  memoryRssBytes: 0,
  eventLoopDelayMs: 0,
  runningTasks: 0,
  queueLength: 0,
  runningShards: 0,
};

/** The member's live incarnation at `now`, as the incarnation rules see it. */
export function liveIncarnation(m: Member, now: number): LiveIncarnation {
  return {
    tokenHash: m.record.sessionHash,
    attached: m.session !== undefined && !m.session.closed,
    // It runs nothing when it stopped for a restart, or when it was never admitted: a new
    // incarnation still waiting was shown everything PENDING and given no task. (Without
    // this, a crash-looping worker would restart the wait with every process and its
    // shards would stay unowned for as long as the loop lasts.)
    stopped: m.stoppedAt !== undefined || !m.shownRunnable || now < m.priorFenceUntil,
    lastAckSentAt: m.lastAckSentAt,
    priorFenceUntil: m.priorFenceUntil,
  };
}

/** Whether the live incarnation may run shards at `now` (no earlier one may still be running). */
export function mayRun(m: Member, now: number): boolean {
  return now >= m.priorFenceUntil;
}

/** What the member may be running, for the handoff. */
export function runState(m: Member, now: number): MemberRun {
  if (m.stoppedAt !== undefined)
    return now >= m.priorFenceUntil ? { kind: "stopped" } : { kind: "waiting", until: m.priorFenceUntil };
  if (!mayRun(m, now)) return { kind: "waiting", until: m.priorFenceUntil };
  return { kind: "running" };
}

/** The record state that describes the member now. */
export function recordState(m: Member, now: number): MemberRecord["state"] {
  if (m.stoppedAt !== undefined) return "released";
  return mayRun(m, now) ? "active" : "waiting";
}
