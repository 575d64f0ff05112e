/**
 * What the console shows, as one JSON document sent on every Server-Sent Event: built by the
 * leader from its memory (groups, members, tasks) and the election prefix (replicas), relayed
 * unchanged by followers, rendered by `console/app.ts` in the browser. Plain data only, so the
 * browser code imports these types and nothing else.
 */

/** One replica campaigning in the election (the lowest create revision leads). */
export interface ConsoleReplica {
  readonly id: string;
  /** gRPC address workers dial. */
  readonly address: string;
  /** HTTP address of its console, when it advertises one. */
  readonly http: string | null;
  /** The create revision of its election key: the epoch it would lead with. */
  readonly revision: number;
  readonly leader: boolean;
}

/** One member of a group as the leader sees it. */
export interface ConsoleMember {
  readonly nodeId: string;
  readonly state: string;
  readonly connected: boolean;
  readonly lastHeardMsAgo: number;
  readonly capacity: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly replica: string;
  readonly cpuPercent: number;
  readonly memoryRssBytes: number;
  readonly eventLoopDelayMs: number;
  readonly load: number;
  readonly runningShards: number;
  readonly runningTasks: number;
  /** Shards the active (or pending) version gives it. */
  readonly shards: readonly number[];
}

/** Task counts and the latest failures of a group (leader memory; finished ones while retained). */
export interface ConsoleTasks {
  readonly counts: Readonly<Record<string, number>>;
  readonly latestFailures: readonly {
    readonly id: string;
    readonly worker: string | null;
    readonly error: string;
  }[];
}

/** One group: its version, members, shard map and handoff. */
export interface ConsoleGroup {
  readonly group: string;
  readonly strategy: string | null;
  readonly version: number | null;
  readonly phase: "pending" | "active" | null;
  readonly totalShards: number;
  readonly members: readonly ConsoleMember[];
  /** shard id → owner node id in the version shown (pending or active). */
  readonly owners: readonly (string | null)[];
  /** During a handoff: shards whose owner changes, from → to. */
  readonly moves: readonly {
    readonly shard: number;
    readonly from: string | null;
    readonly to: string | null;
  }[];
  /** During a handoff: members that must still release, and those that have. */
  readonly awaitingRelease: readonly string[];
  readonly released: readonly string[];
  readonly degraded: Readonly<Record<string, string>>;
  /** Per shard, who ran it over the last minutes; `owner: null` is a gap (a handoff in flight). */
  readonly timeline: readonly (readonly TimelineSegment[])[];
  readonly tasks: ConsoleTasks | null;
}

/** A stretch of time during which a shard had one owner (or none: `null`). */
export interface TimelineSegment {
  readonly owner: string | null;
  /** Epoch milliseconds. */
  readonly from: number;
  readonly to: number;
}

/** The whole console document. */
export interface ConsoleView {
  /** When the leader built it (epoch ms). */
  readonly at: number;
  /** The replica that built it (the leader), and the one that served it to this page. */
  readonly builtBy: string;
  readonly servedBy: string;
  readonly leader: {
    readonly id: string;
    readonly address: string;
    readonly epoch: number;
    readonly since: string;
  } | null;
  readonly replicas: readonly ConsoleReplica[];
  readonly groups: readonly ConsoleGroup[];
  /** How far back the timelines go, in ms. */
  readonly timelineWindowMs: number;
  /** Set while this replica cannot get a leader's view (no leader known, or its feed is down). */
  readonly problem: string | null;
}
