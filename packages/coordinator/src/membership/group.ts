import { createHash, randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  AssignmentPhase,
  type AssignmentSchema,
  CommandKind,
  type Heartbeat,
  type Hello,
  type Leave,
  type Release,
} from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { FencedStore } from "../leadership/fenced-store.js";
import type { LeaseKeeper } from "../leadership/lease-keeper.js";
import type { ReplicaOptions } from "../replica/replica-options.js";
import type { EffectiveSettings } from "../replica/settings.js";
import type { CoordinatorMessageKind, StreamStatus, WorkerSession } from "../server/worker-session.js";
import {
  type Owners,
  ownersEqual,
  type Plan,
  planAssignment,
  primaryShard,
  type StrategyName,
} from "../sharding/assignment.js";
import { shardLocations } from "../sharding/shard-location.js";
import { backoffDelayMs } from "../store/backoff.js";
import { classifyEtcdError, etcdRetryBackoff } from "../store/etcd-errors.js";
import type { EtcdHealth } from "../store/etcd-health.js";
import type { KeyLayout } from "../store/keys.js";
import {
  type AssignmentRecord,
  type GroupConfig,
  type GroupControl,
  groupConfigSchema,
  groupControlSchema,
  type MemberRecord,
  parseRecord,
} from "../store/records.js";
import type { TaskEvents, TaskMembership } from "../tasks/dispatcher.js";
import type { PlacementWorker, ShardOwnership } from "../tasks/placement.js";
import { ControlWatch } from "./control-watch.js";
import { DeadlineQueue } from "./deadline-queue.js";
import { Debounce } from "./debounce.js";
import { readGroup, type StoredGroup, salvageVersion } from "./group-state.js";
import { mayActivate, planHandoff } from "./handoff.js";
import { decideHello, supersededUntil } from "./incarnation.js";
import { liveIncarnation, type Member, mayRun, noLoad, recordState, runState } from "./member.js";

/** What a group needs from the leader that serves it. */
export interface GroupContext {
  readonly group: string;
  readonly options: ReplicaOptions;
  /** The cluster settings in force now. */
  settings(): EffectiveSettings;
  readonly epoch: number;
  /** Monotonic ms when this leadership began (loaded members count as acked then). */
  readonly leaderStart: number;
  readonly keys: KeyLayout;
  readonly client: Etcd3;
  readonly store: FencedStore;
  readonly keeper: LeaseKeeper;
  readonly log: Logger;
  /** Whether we still lead (checked before a Welcome, as before an ack). */
  holds(): boolean;
  /** The task dispatcher, told what membership changes mean for tasks. */
  readonly tasks?: TaskEvents;
  /** The replica's etcd health: failed writes are logged and counted there, by kind. */
  readonly health?: EtcdHealth;
  /** Counters of membership events (Prometheus, see replica/metrics.ts). */
  readonly metrics?: GroupMetricsSink;
  /** Monotonic milliseconds (performance.now()). */
  now(): number;
}

type GroupMember = Member<WorkerSession>;

interface Handoff {
  readonly version: number;
  /** When the pending version was written (or loaded), monotonic ms. */
  readonly writtenAt: number;
  readonly awaiting: Set<string>;
  /** After this, losers that have not released are expelled. */
  readonly deadline: number;
  /** Incarnations that cannot release stop by then; the version waits for it. */
  fencesUntil: number;
}

/** What the group reports to metrics (all optional: a test may pass none). */
export interface GroupMetricsSink {
  /** A member joined (new member) or a new incarnation of one started. */
  memberJoined(group: string, kind: "new" | "incarnation" | "resumed"): void;
  /** A member was removed: `why` is leave, session_timeout, release_timeout, lease_expired, restart_grace_expired. */
  memberRemoved(group: string, why: string): void;
  /** A version was written (`phase` as written). */
  versionWritten(group: string, phase: "pending" | "active"): void;
  /** A pending version became active after `pendingMs`. */
  versionActivated(group: string, pendingMs: number): void;
  /** A loser released its shards. */
  released(group: string): void;
  /** Time between two heartbeats of one member as the leader heard them (ms). */
  heartbeatGap?(group: string, ms: number): void;
}

/** Why a group is degraded: one entry per kind of problem, cleared when it is resolved. */
export type DegradedReason = "assignment_invalid" | "config_invalid" | "control_invalid" | "member_invalid";

export type AssignmentView = MessageInitShape<typeof AssignmentSchema>;

/** A member as the status view shows it. */
export interface MemberSnapshot {
  readonly nodeId: string;
  readonly incarnation: number;
  readonly state: MemberRecord["state"];
  readonly connected: boolean;
  readonly lastSeenMsAgo: number;
  readonly capacity: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly replica: string;
  readonly load: Member["load"];
  readonly corrupt?: string;
}

export interface GroupSnapshot {
  readonly group: string;
  readonly members: MemberSnapshot[];
  readonly assignment: AssignmentRecord | undefined;
  readonly degraded: Readonly<Partial<Record<DegradedReason, string>>>;
  readonly ownershipUnknown: boolean;
  readonly awaitingRelease: string[];
}

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const newToken = () => randomBytes(18).toString("base64url");
const capacityOf = (c: number) => (Number.isInteger(c) && c > 0 ? c : 1);
const sameLabels = (a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>) =>
  JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

/** The shards of an ack to a member with no view yet (shared: acks are never changed). */
const noShards: readonly number[] = [];
/** New members written per transaction (etcd's --max-txn-ops defaults to 128). */
const membersPerTxn = 100;
/** New members written per batch (one shared lease, its transactions sent together). */
const maxJoinBatch = 5000;

/** A brand-new member's Hello, waiting for its batch to be written. */
interface PendingJoin {
  readonly session: WorkerSession;
  readonly nodeId: string;
  readonly labels: Record<string, string>;
  readonly capacity: number;
  readonly token: string;
  readonly runsAfter: number;
  readonly waiting: boolean;
  readonly done: {
    resolve(r: StreamStatus | undefined): void;
    reject(e: unknown): void;
  };
}

// Deadline keys besides node ids (`~` cannot appear in a node id).
const REBALANCE = "~rebalance";
const HANDOFF = "~handoff";
const ADOPT = "~adopt";

/**
 * One worker group on the leader. Membership (in memory, mirrored to lease-bound etcd keys),
 * incarnations (a new process under a live node id starts nothing until the old one has
 * provably stopped), the rebalance debounce, and the cooperative handoff of each version
 * (pending → every loser released or stopped by its fence → active). Heartbeats never touch
 * etcd. Every etcd write of a group runs one at a time, in order, and memory changes only
 * after the write committed; loading after a failover rebuilds memory from the same records.
 */
export class Group implements TaskMembership {
  readonly #ctx: GroupContext;
  #epochBigint: bigint | undefined;
  readonly #members = new Map<string, GroupMember>();
  /** Attempts (`taskId` -> attempt) whose final report from each node is recorded, for its next ack. */
  readonly #recorded = new Map<string, Map<string, number>>();
  // Members by lease: first-time members that join in one batch share one lease (see #flushJoins).
  readonly #byLease = new Map<string, Set<GroupMember>>();
  // When each lease was last kept alive: a shared lease is renewed once for all its members.
  readonly #leaseKeptAt = new Map<string, number>();
  /** Removed incarnations that may still run: node id → until when (monotonic ms). */
  readonly #tombstones = new Map<string, number>();
  readonly #deadlines = new DeadlineQueue<string>();
  readonly #debounce: Debounce;
  readonly #degraded = new Map<DegradedReason, string>();
  readonly #adoptions = new Set<string>();
  /** Brand-new members waiting for their batch to be written (a twin Hello is refused). */
  readonly #joining = new Map<string, PendingJoin>();
  #joinFlushQueued = false;
  #assignment: AssignmentRecord | undefined;
  /** What members run is not known: views are held and the next version awaits everyone. */
  #ownershipUnknown = false;
  /** No version may be at or below this: the highest version any worker or record showed. */
  #versionFloor = 0;
  #config: GroupConfig | undefined;
  #repairId: string | undefined;
  /** The operator's switches (`<ns>/groups/<g>/control`), as last read. */
  #control: { paused: boolean; drained: ReadonlySet<string>; capacity: ReadonlyMap<string, number> } = {
    paused: false,
    drained: new Set(),
    capacity: new Map(),
  };
  /** A version was due while the group was paused: written on resume. */
  #rebalanceOnResume = false;
  #views = new Map<string, { record: AssignmentRecord; held: boolean; view: AssignmentView }>();
  #handoff: Handoff | undefined;
  #rebalanceAfterHandoff = false;
  #writeFailures = 0;
  #lastFailureKind: ReturnType<typeof classifyEtcdError> = "unavailable";
  #queue: Promise<unknown> = Promise.resolve();
  #watch: ControlWatch | undefined;
  #state: "loading" | "serving" | "closed" = "loading";

  private constructor(ctx: GroupContext) {
    this.#ctx = ctx;
    const delay = ctx.options.rebalanceDelayMs;
    this.#debounce = new Debounce(delay, Math.max(delay, ctx.options.rebalanceMaxDelayMs));
  }

  /**
   * A group as etcd holds it. Members keep their leases and get one session timeout of grace
   * from now to reconnect; the assignment stays exactly as it was. One bad record never makes
   * this fail: it degrades this group only (see {@link DegradedReason}).
   */
  static async load(ctx: GroupContext): Promise<Group> {
    const g = new Group(ctx);
    const stored = await readGroup(ctx.client, ctx.keys, ctx.group);
    g.#replay(stored);
    return g;
  }

  get name(): string {
    return this.#ctx.group;
  }

  get assignment(): AssignmentRecord | undefined {
    return this.#assignment;
  }

  /** A snapshot for the status view. */
  snapshot(): GroupSnapshot {
    const now = this.#ctx.now();
    return {
      group: this.#ctx.group,
      members: [...this.#members.values()].map((m) => ({
        nodeId: m.record.nodeId,
        incarnation: m.record.incarnation,
        state: recordState(m, now),
        connected: m.session !== undefined && !m.session.closed,
        lastSeenMsAgo: Math.round(now - m.lastHeard),
        capacity: m.record.capacity,
        labels: m.record.labels,
        replica: m.record.replica,
        load: { ...m.load },
        ...(m.corrupt === undefined ? {} : { corrupt: m.corrupt }),
      })),
      assignment: this.#assignment,
      degraded: Object.fromEntries(this.#degraded),
      ownershipUnknown: this.#ownershipUnknown,
      awaitingRelease: [...(this.#handoff?.awaiting ?? [])].sort(),
    };
  }

  // ---- loading: memory is the replay of the records -------------------------------------

  #replay(stored: StoredGroup): void {
    const { options, leaderStart, keeper, log, group } = this.#ctx;
    const now = this.#ctx.now();
    const fenceMs = this.#ctx.settings().fenceMs;
    for (const s of stored.members) {
      const corrupt = s.error ?? (s.record === undefined ? "unreadable" : undefined);
      const record: MemberRecord = s.record ?? {
        nodeId: s.nodeId,
        group,
        labels: {},
        capacity: 1,
        joinedAt: new Date().toISOString(),
        replica: "",
        // No token matches: its worker comes back as a new incarnation, which waits.
        sessionHash: "",
        incarnation: 0,
        state: "active",
      };
      const m: GroupMember = {
        record,
        leaseId: s.leaseId,
        session: undefined,
        lastHeard: now,
        // Acknowledged by a previous leader, before we took over.
        lastAckSentAt: leaderStart,
        priorFenceUntil: record.state === "waiting" ? leaderStart + fenceMs : Number.NEGATIVE_INFINITY,
        stoppedAt: record.state === "released" ? now : undefined,
        // Unknown what a previous leader showed it: assume it may have run, unless it waited.
        shownRunnable: record.state !== "waiting",
        lastKeepAliveAt: now - Math.random() * keepAliveEveryMs(options),
        heardSinceKeepAlive: false,
        removing: false,
        corrupt,
        load: { ...noLoad },
      };
      this.#members.set(s.nodeId, m);
      const first = this.#attachLease(m);
      // Extend the adopted lease at once: the grace period must not outlive it.
      if (first) keeper.keepAlive(s.leaseId);
      if (corrupt !== undefined) {
        this.#degrade("member_invalid", `member ${s.nodeId}: ${corrupt}`);
        log.error({ event: "member_record_invalid", group, node: s.nodeId, err: corrupt });
      }
    }
    const a = stored.assignment;
    if (a.kind === "ok") {
      this.#setAssignment(a.value);
      this.#versionFloor = a.value.version;
      if (a.value.phase === "pending") this.#restoreHandoff(a.value, now);
    } else if (a.kind === "invalid") {
      // Nobody knows who owns what: wait for an operator (`coordinator repair`).
      this.#versionFloor = salvageVersion(a.raw);
      this.#degrade("assignment_invalid", a.error);
      log.error({
        event: "assignment_record_invalid",
        group,
        err: a.error,
        action: "run coordinator repair",
      });
    } else if (this.#members.size > 0) {
      // Members without an assignment: the record was lost. Workers may run shards of a version
      // we cannot see, so the next version awaits all of them (and goes above what they show).
      this.#ownershipUnknown = true;
      log.warn({ event: "assignment_missing", group, members: this.#members.size });
    }
    this.#applyConfig(stored.config.kind === "ok" ? stored.config.value : undefined, stored.config);
    if (stored.control.kind === "ok") {
      this.#repairId = stored.control.value.repair?.id;
      this.#applyControl(stored.control.value, false);
    } else if (stored.control.kind === "invalid") {
      this.#degrade("control_invalid", stored.control.error);
    }
    log.info({
      event: "group_loaded",
      group,
      members: this.#members.size,
      version: this.#assignment?.version ?? 0,
      phase: this.#assignment?.phase ?? null,
      degraded: Object.fromEntries(this.#degraded),
      ownershipUnknown: this.#ownershipUnknown,
    });
    this.#startWatch(String(BigInt(stored.operatorRevision) + 1n));
    this.#state = "serving";
    // Members are stamped as heard when serving starts, not when the first of many groups
    // was read: each has a full session timeout from now to reconnect.
    const servingAt = this.#ctx.now();
    for (const m of this.#members.values()) {
      m.lastHeard = servingAt;
      this.#scheduleMember(m, servingAt);
    }
    // Only writes a version if membership and assignment disagree (the plan is idempotent).
    this.#scheduleRebalance("leader_loaded");
  }

  #restoreHandoff(a: AssignmentRecord, now: number): void {
    const { leaderStart } = this.#ctx;
    const fenceMs = this.#ctx.settings().fenceMs;
    const awaiting = new Set<string>();
    // We cannot know when our predecessor's fences end; ours, from the takeover, cover them.
    let fencesUntil = a.fencesUntil !== undefined ? leaderStart + fenceMs : Number.NEGATIVE_INFINITY;
    for (const nodeId of a.awaitingRelease) {
      const m = this.#members.get(nodeId);
      if (m !== undefined && mayRun(m, now) && m.stoppedAt === undefined) awaiting.add(nodeId);
      else fencesUntil = Math.max(fencesUntil, leaderStart + fenceMs);
    }
    const deadline = now + this.#ctx.settings().expiryMs;
    this.#handoff = { version: a.version, writtenAt: now, awaiting, deadline, fencesUntil };
    this.#deadlines.schedule(HANDOFF, Math.min(deadline, Math.max(now, fencesUntil)));
  }

  // ---- views -----------------------------------------------------------------------------

  #setAssignment(a: AssignmentRecord | undefined): void {
    this.#assignment = a;
    this.#views.clear();
  }

  /**
   * The assignment as one node sees it. Held (shown PENDING: start nothing) while the node's
   * live incarnation may not run yet, or while ownership is unknown.
   */
  view(nodeId: string): AssignmentView | undefined {
    const a = this.#assignment;
    if (a === undefined) return undefined;
    const m = this.#members.get(nodeId);
    const held =
      this.#ownershipUnknown ||
      (m !== undefined && (m.stoppedAt !== undefined || !mayRun(m, this.#ctx.now())));
    // Heartbeat acks ask for this thousands of times per second; it only changes with the
    // assignment record (and whether the node is held), so it is computed once per change.
    const cached = this.#views.get(nodeId);
    if (cached !== undefined && cached.record === a && cached.held === held) return cached.view;
    const shards = Object.hasOwn(a.owners, nodeId) ? (a.owners[nodeId] ?? []) : [];
    const view: AssignmentView = {
      version: BigInt(a.version),
      phase: a.phase === "active" && !held ? AssignmentPhase.ACTIVE : AssignmentPhase.PENDING,
      totalShards: a.totalShards,
      shardId: primaryShard(a.owners, nodeId),
      shards: [...shards],
      strategy: a.strategy,
      leaderEpoch: BigInt(a.leaderEpoch),
      // Where each owned shard's data can be read directly (a database source), if anywhere.
      locations: shardLocations(this.#config, shards, a.totalShards),
    };
    this.#views.set(nodeId, { record: a, held, view });
    return view;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  // ---- stream events ------------------------------------------------------------------

  /** Admits, resumes or refuses a Hello; returns a refusal status, or undefined when welcomed. */
  async join(session: WorkerSession, hello: Hello): Promise<StreamStatus | undefined> {
    const decided = await this.#serial(() => this.#decideJoin(session, hello));
    // A brand-new member waits, outside the serial queue, for the batch that writes it
    // (boxed: an async step returning the promise itself would wait for it, a deadlock).
    return decided !== undefined && "batched" in decided ? await decided.batched : decided;
  }

  #decideJoin(
    session: WorkerSession,
    hello: Hello,
  ): Promise<StreamStatus | undefined | { batched: Promise<StreamStatus | undefined> }> {
    return (async (): Promise<StreamStatus | undefined | { batched: Promise<StreamStatus | undefined> }> => {
      if (this.#state !== "serving") return unavailable("leadership is changing; retry");
      if (!this.#ctx.holds()) return unavailable("this replica no longer leads; reconnect to the leader");
      const { options, group, log } = this.#ctx;
      const settings = this.#ctx.settings();
      const now = this.#ctx.now();
      const nodeId = hello.nodeId;
      const presented = hello.sessionToken === "" ? "" : sha256(hello.sessionToken);
      const capacity = capacityOf(hello.capacity);
      const labels = { ...hello.labels };
      const existing = this.#members.get(nodeId);
      const m = existing !== undefined && !existing.removing ? existing : undefined;
      const decision = decideHello({
        live: m === undefined ? undefined : liveIncarnation(m, now),
        // A node id that is not a member can only inherit what the assignment still gives it;
        // an earlier incarnation may be running exactly that.
        goneFenceUntil:
          this.#ownershipUnknown || this.#ownsSomething(nodeId)
            ? this.#goneFenceUntil(nodeId)
            : Number.NEGATIVE_INFINITY,
        presentedHash: presented,
        sessionTimeoutMs: settings.fenceMs,
      });
      if (decision.kind === "duplicate" || this.#joining.has(nodeId)) {
        return {
          code: status.ALREADY_EXISTS,
          details: `node ${nodeId} already has a live stream in group ${group}; only its session token may take it over (is a second process running with this node id?)`,
        };
      }
      this.#noteLastKnownVersion(nodeId, Number(hello.lastKnownVersion));
      if (decision.kind === "resume" && m !== undefined) {
        if (m.session !== undefined && m.session !== session)
          m.session.close({
            code: status.ABORTED,
            details: "taken over by a newer stream of the same session",
          });
        const capacityChanged = capacity !== m.record.capacity;
        // Back from a planned restart with its own token: it stopped everything, it may run again.
        const restarted = m.stoppedAt !== undefined;
        m.stoppedAt = undefined;
        const state = recordState(m, now);
        if (capacityChanged || !sameLabels(labels, m.record.labels) || state !== m.record.state) {
          const record: MemberRecord = { ...m.record, capacity, labels, replica: options.id, state };
          await this.#putMember(record, m.leaseId);
          m.record = record;
        } else if (m.record.replica !== options.id) {
          this.#adopt(nodeId);
        }
        if (restarted) this.#views.delete(nodeId);
        m.session = session;
        m.lastHeard = now;
        m.heardSinceKeepAlive = true;
        if (!this.#welcome(session, m, hello.sessionToken, true)) return unavailable("leadership lost");
        this.#standingCommands(nodeId);
        log.info({
          event: "member_resumed",
          group,
          node: nodeId,
          incarnation: m.record.incarnation,
          version: this.#assignment?.version ?? 0,
        });
        this.#ctx.tasks?.resumed(group, nodeId, hello.runningTaskIds);
        this.#ctx.metrics?.memberJoined(group, "resumed");
        if (capacityChanged) this.#scheduleRebalance("capacity_changed");
        this.#scheduleMember(m, now);
        return undefined;
      }
      // A new incarnation: a new token, and nothing runs before `runsAfter`.
      const token = newToken();
      const runsAfter = decision.kind === "new" ? decision.runsAfter : Number.NEGATIVE_INFINITY;
      const waiting = runsAfter > now;
      if (m !== undefined) {
        const record: MemberRecord = {
          ...m.record,
          capacity,
          labels,
          replica: options.id,
          sessionHash: sha256(token),
          incarnation: m.record.incarnation + 1,
          state: waiting ? "waiting" : "active",
        };
        await this.#putMember(record, m.leaseId);
        const old = m.session;
        const capacityChanged = capacity !== m.record.capacity;
        m.record = record;
        m.session = session;
        m.priorFenceUntil = runsAfter;
        m.stoppedAt = undefined;
        m.shownRunnable = false;
        m.lastHeard = now;
        m.heardSinceKeepAlive = true;
        if (m.corrupt !== undefined) {
          m.corrupt = undefined;
          this.#recheckMembersValid();
        }
        // The superseded incarnation cannot release any more: the version outwaits its fence.
        const h = this.#handoff;
        if (h?.awaiting.delete(nodeId) === true) {
          h.fencesUntil = Math.max(h.fencesUntil, runsAfter);
          await this.#persistHandoff(h);
          this.#maybeActivate();
        }
        old?.close({
          code: status.ABORTED,
          details: `superseded by incarnation ${record.incarnation} of node ${nodeId}`,
        });
        // Its tasks go back to the queue once it has provably stopped.
        this.#ctx.tasks?.incarnationEnded(group, nodeId, runsAfter);
        this.#ctx.metrics?.memberJoined(group, "incarnation");
        log.info({
          event: "member_new_incarnation",
          group,
          node: nodeId,
          incarnation: record.incarnation,
          waitMs: waiting ? Math.round(runsAfter - now) : 0,
          version: this.#assignment?.version ?? 0,
        });
        if (capacityChanged) this.#scheduleRebalance("capacity_changed");
      } else {
        // A brand-new member: written with the others that arrive meanwhile (one lease grant
        // each, one transaction per 100 members), so a fresh deployment's burst of Hellos is
        // not one grant and one transaction after another.
        return {
          batched: this.#enqueueJoin({ session, nodeId, labels, capacity, token, runsAfter, waiting }),
        };
      }
      return this.#welcomeNew(session, nodeId, token, waiting, now);
    })();
  }

  #welcomeNew(
    session: WorkerSession,
    nodeId: string,
    token: string,
    waiting: boolean,
    now: number,
  ): StreamStatus | undefined {
    const member = this.#members.get(nodeId);
    if (member === undefined) return unavailable("membership changed; retry");
    if (!this.#welcome(session, member, token, false)) return unavailable("leadership lost");
    this.#standingCommands(nodeId);
    this.#scheduleMember(member, now);
    if (!waiting) this.#ctx.tasks?.kick(this.#ctx.group);
    return undefined;
  }

  #enqueueJoin(j: Omit<PendingJoin, "done">): Promise<StreamStatus | undefined> {
    return new Promise<StreamStatus | undefined>((resolve, reject) => {
      const entry: PendingJoin = { ...j, done: { resolve, reject } };
      this.#joining.set(j.nodeId, entry);
      if (!this.#joinFlushQueued) {
        this.#joinFlushQueued = true;
        // Behind every step already queued: Hellos that arrived meanwhile join this batch.
        void this.#serial(() => this.#flushJoins());
      }
    });
  }

  /** Writes every queued new member: leases granted concurrently, puts in a few transactions. */
  async #flushJoins(): Promise<void> {
    this.#joinFlushQueued = false;
    const batch = [...this.#joining.values()].slice(0, maxJoinBatch);
    if (this.#joining.size > batch.length) {
      this.#joinFlushQueued = true;
      void this.#serial(() => this.#flushJoins());
    }
    const settle = (j: PendingJoin, r: StreamStatus | undefined | Error) => {
      this.#joining.delete(j.nodeId);
      if (r instanceof Error) j.done.reject(r);
      else j.done.resolve(r);
    };
    if (this.#state !== "serving" || !this.#ctx.holds()) {
      for (const j of batch) settle(j, unavailable("this replica no longer leads; reconnect to the leader"));
      return;
    }
    // A stream that ended while queued is not written at all.
    const live = batch.filter((j) => {
      if (j.session.closed) settle(j, unavailable("stream ended before it was admitted"));
      return !j.session.closed;
    });
    if (live.length === 0) return;
    const { options, group, keeper, keys, store, log } = this.#ctx;
    // One lease for the whole batch: a LeaseGrant is a raft proposal of its own, and 5,000
    // of them were most of a cold start's time. The lease still ends by itself when no
    // replica keeps it alive, and members leave one key at a time (the lease is revoked with
    // its last member); see docs/membership.md, "Shared member leases".
    let leaseId: string;
    try {
      ({ leaseId } = await keeper.grant(options.memberLeaseTtlSec));
    } catch (e) {
      for (const j of live) settle(j, CoordinatorError.from(e));
      return;
    }
    const writes: { j: PendingJoin; leaseId: string; record: MemberRecord }[] = [];
    for (const j of live) {
      writes.push({
        j,
        leaseId,
        record: {
          nodeId: j.nodeId,
          group,
          labels: j.labels,
          capacity: j.capacity,
          joinedAt: new Date().toISOString(),
          replica: options.id,
          sessionHash: sha256(j.token),
          incarnation: 1,
          state: j.waiting ? "waiting" : "active",
        },
      });
    }
    const chunks: (typeof writes)[] = [];
    for (let i = 0; i < writes.length; i += membersPerTxn) chunks.push(writes.slice(i, i + membersPerTxn));
    const committed = await Promise.allSettled(
      chunks.map((c) =>
        store.commit(
          ...c.map((w) =>
            store.client
              .put(keys.member(group, w.record.nodeId))
              .value(JSON.stringify(w.record))
              .lease(w.leaseId),
          ),
        ),
      ),
    );
    const now = this.#ctx.now();
    if (committed.every((r) => r.status !== "fulfilled")) void keeper.revoke(leaseId).catch(() => undefined);
    for (const [i, chunk] of chunks.entries()) {
      const r = committed[i];
      if (r?.status !== "fulfilled") {
        for (const w of chunk)
          settle(w.j, CoordinatorError.from(r?.status === "rejected" ? r.reason : "write failed"));
        continue;
      }
      for (const { j, record } of chunk) {
        const fresh: GroupMember = {
          record,
          leaseId,
          session: j.session,
          lastHeard: now,
          lastAckSentAt: now,
          priorFenceUntil: j.runsAfter,
          stoppedAt: undefined,
          shownRunnable: false,
          // Spread keep-alives over the interval: members that joined in one burst would
          // otherwise all be renewed in the same tick, a periodic stall of the event loop.
          lastKeepAliveAt: now - Math.random() * keepAliveEveryMs(options),
          heardSinceKeepAlive: false,
          removing: false,
          corrupt: undefined,
          load: { ...noLoad },
        };
        this.#members.set(j.nodeId, fresh);
        this.#attachLease(fresh);
        this.#tombstones.delete(j.nodeId);
        this.#ctx.metrics?.memberJoined(group, "new");
        log.info({
          event: "member_joined",
          group,
          node: j.nodeId,
          members: this.#members.size,
          waitMs: j.waiting ? Math.round(j.runsAfter - now) : 0,
          batch: writes.length,
        });
        this.#scheduleRebalance("join");
        settle(j, this.#welcomeNew(j.session, j.nodeId, j.token, j.waiting, now));
      }
    }
  }

  /** Records that the live incarnation is being shown what it may run, if it may run now. */
  #noteShown(m: GroupMember): void {
    if (!m.shownRunnable && m.stoppedAt === undefined && mayRun(m, this.#ctx.now())) m.shownRunnable = true;
  }

  /** Sends Welcome if we still lead (a Welcome extends the worker's fence, like an ack). */
  #welcome(session: WorkerSession, m: GroupMember, token: string, resumed: boolean): boolean {
    if (!this.#ctx.holds()) return false;
    const { options, epoch } = this.#ctx;
    const settings = this.#ctx.settings();
    m.lastAckSentAt = this.#ctx.now();
    this.#noteShown(m);
    session.send({
      case: "welcome",
      value: {
        sessionToken: token,
        leaderEpoch: BigInt(epoch),
        leaderId: options.id,
        heartbeatIntervalMs: settings.heartbeatIntervalMs,
        sessionTimeoutMs: settings.sessionTimeoutMs,
        resumed,
        assignment: this.view(m.record.nodeId),
        incarnation: BigInt(m.record.incarnation),
      },
    });
    return true;
  }

  /** A worker showed the last version it saw: none we write may be at or below it. */
  #noteLastKnownVersion(nodeId: string, lastKnown: number): void {
    if (!Number.isSafeInteger(lastKnown) || lastKnown <= 0) return;
    const ours = this.#assignment?.version ?? 0;
    if (lastKnown > this.#versionFloor) this.#versionFloor = lastKnown;
    if (lastKnown > ours && !this.#degraded.has("assignment_invalid")) {
      // Versions reach etcd before any worker sees them, so a worker ahead of etcd means etcd
      // lost history (a deleted key, a restored backup): what members run is not known.
      if (!this.#ownershipUnknown)
        this.#ctx.log.warn({
          event: "ownership_unknown",
          group: this.#ctx.group,
          node: nodeId,
          lastKnown,
          version: ours,
        });
      this.#ownershipUnknown = true;
      this.#views.clear();
      this.#scheduleRebalance("worker_ahead_of_etcd");
    }
  }

  /** The leader epoch as acks carry it, converted once (a bigint per ack is garbage). */
  get #epochBig(): bigint {
    this.#epochBigint ??= BigInt(this.#ctx.epoch);
    return this.#epochBigint;
  }

  heartbeat(session: WorkerSession, hb: Heartbeat, seq: bigint): void {
    const m = this.#members.get(session.nodeId);
    if (m !== undefined && m.session === session && m.removing) return; // leaving: no more acks
    if (m === undefined || m.session !== session) {
      session.close({
        code: status.FAILED_PRECONDITION,
        details: "no longer a member of the group (expelled or superseded); reconnect to rejoin",
      });
      return;
    }
    const now = this.#ctx.now();
    this.#ctx.metrics?.heartbeatGap?.(this.#ctx.group, now - m.lastHeard);
    m.lastHeard = now;
    m.heardSinceKeepAlive = true;
    const l = m.load;
    l.load = hb.load;
    l.cpuPercent = hb.cpuPercent;
    l.memoryRssBytes = Number(hb.memoryRssBytes);
    l.eventLoopDelayMs = hb.eventLoopDelayMs;
    l.runningTasks = hb.runningTasks;
    l.queueLength = hb.queueLength;
    l.runningShards = hb.runningShards;
    const v = this.view(session.nodeId);
    const settings = this.#ctx.settings();
    m.lastAckSentAt = now;
    if (!m.shownRunnable) this.#noteShown(m);
    const ack = {
      nodeId: session.nodeId,
      ts: hb.ts,
      accepted: true,
      totalShards: v?.totalShards ?? 0,
      shardId: v?.shardId ?? -1,
      shards: v?.shards ?? noShards,
      shardVersion: v?.version ?? 0n,
      phase: v?.phase ?? AssignmentPhase.UNSPECIFIED,
      active: v?.phase === AssignmentPhase.ACTIVE,
      leaderEpoch: this.#epochBig,
      heartbeatSeq: seq,
      sessionTimeoutMs: settings.sessionTimeoutMs,
      heartbeatIntervalMs: settings.heartbeatIntervalMs,
    };
    // Most acks carry no recorded task finals: those take the hand-encoded path.
    if (!this.#recorded.has(session.nodeId)) session.sendHeartbeatAck(ack);
    else
      session.send({
        case: "heartbeatAck",
        value: { ...ack, shards: [...ack.shards], recordedFinals: this.#takeRecorded(session.nodeId) },
      });
  }

  /**
   * The final report of `taskId`'s `attempt` from `nodeId` is recorded (or needs no record):
   * its next heartbeat ack says so, and the worker forgets the report.
   */
  recorded(nodeId: string, taskId: string, attempt: number): void {
    if (!this.#members.has(nodeId)) return;
    let ids = this.#recorded.get(nodeId);
    if (ids === undefined) {
      ids = new Map();
      this.#recorded.set(nodeId, ids);
      // Nodes that left take their entries with them.
      if (this.#recorded.size > this.#members.size + 64)
        for (const n of this.#recorded.keys()) if (!this.#members.has(n)) this.#recorded.delete(n);
    }
    ids.set(taskId, attempt);
  }

  /** Up to 1,000 recorded attempts for `nodeId`'s next ack (the rest go with the following ones). */
  #takeRecorded(nodeId: string): { taskId: string; attempt: number }[] {
    const ids = this.#recorded.get(nodeId);
    if (ids === undefined) return [];
    const out: { taskId: string; attempt: number }[] = [];
    for (const [taskId, attempt] of ids) {
      if (out.length >= 1000) break;
      out.push({ taskId, attempt });
    }
    for (const r of out) ids.delete(r.taskId);
    if (ids.size === 0) this.#recorded.delete(nodeId);
    return out;
  }

  release(session: WorkerSession, rel: Release): void {
    const m = this.#members.get(session.nodeId);
    // Only the live incarnation, once it may run, can vouch for what runs under its node id.
    if (m === undefined || m.session !== session || !mayRun(m, this.#ctx.now())) return;
    const h = this.#handoff;
    if (h === undefined || BigInt(h.version) !== rel.version) return;
    if (h.awaiting.delete(session.nodeId)) {
      this.#ctx.metrics?.released(this.#ctx.group);
      this.#ctx.log.info({
        event: "shards_released",
        group: this.#ctx.group,
        node: session.nodeId,
        version: h.version,
        left: h.awaiting.size,
      });
      this.#maybeActivate();
    }
  }

  leave(session: WorkerSession, leave: Leave): void {
    const m = this.#members.get(session.nodeId);
    if (m === undefined || m.session !== session) {
      session.close({ code: status.OK, details: "left" });
      return;
    }
    if (m.removing) return; // a removal is already queued; it closes this stream
    if (leave.restart) {
      void this.#stopForRestart(m, session).catch((e: unknown) => this.#writeFailed("restart_leave", e));
      return;
    }
    void this.#remove(m, "leave", { code: status.OK, details: "left the group" }).catch((e: unknown) =>
      this.#writeFailed("leave", e),
    );
  }

  /** A planned restart: the live incarnation stopped everything; the membership stays. */
  #stopForRestart(m: GroupMember, session: WorkerSession): Promise<void> {
    return this.#serial(async () => {
      if (m.removing || m.session !== session || this.#members.get(m.record.nodeId) !== m) return;
      const now = this.#ctx.now();
      const record: MemberRecord = { ...m.record, state: "released" };
      await this.#putMember(record, m.leaseId);
      m.record = record;
      m.stoppedAt = now;
      m.session = undefined;
      session.close({
        code: status.OK,
        details: "left for a restart; the membership is kept for the restart grace",
      });
      const h = this.#handoff;
      if (h?.awaiting.delete(m.record.nodeId) === true) this.#maybeActivate();
      // It stopped its tasks too; only an earlier incarnation's fence may still count.
      this.#ctx.tasks?.incarnationEnded(this.#ctx.group, m.record.nodeId, m.priorFenceUntil);
      this.#ctx.log.info({
        event: "member_restarting",
        group: this.#ctx.group,
        node: m.record.nodeId,
        incarnation: m.record.incarnation,
        graceMs: this.#ctx.options.restartGraceMs,
      });
      this.#scheduleMember(m, now);
    });
  }

  detached(session: WorkerSession): void {
    const m = this.#members.get(session.nodeId);
    if (m !== undefined && m.session === session) m.session = undefined;
  }

  /** etcd says a member lease is gone (TTL 0): its key went with it. */
  leaseGone(leaseId: string): void {
    for (const m of [...(this.#byLease.get(leaseId) ?? [])]) {
      if (m.removing) continue;
      void this.#remove(
        m,
        "lease_expired",
        { code: status.UNAVAILABLE, details: "membership lease expired; reconnect to rejoin" },
        false,
      ).catch((e: unknown) => this.#writeFailed("lease_expired", e));
    }
  }

  /** Counts `m` on its lease; true when it is the lease's first member here. */
  #attachLease(m: GroupMember): boolean {
    let set = this.#byLease.get(m.leaseId);
    const first = set === undefined;
    if (set === undefined) {
      set = new Set();
      this.#byLease.set(m.leaseId, set);
    }
    set.add(m);
    return first;
  }

  /** Forgets `m` on its lease; true when no member uses the lease any more. */
  #detachLease(m: GroupMember): boolean {
    const set = this.#byLease.get(m.leaseId);
    set?.delete(m);
    if (set !== undefined && set.size > 0) return false;
    this.#byLease.delete(m.leaseId);
    this.#leaseKeptAt.delete(m.leaseId);
    return true;
  }

  /**
   * Renews a member's lease unless another member of the same lease renewed it within half
   * an interval: a lease shared by a batch costs one keep-alive, not one per member.
   */
  #keepLease(leaseId: string, now: number): void {
    const last = this.#leaseKeptAt.get(leaseId);
    if (last !== undefined && now - last < keepAliveEveryMs(this.#ctx.options) / 2) return;
    this.#leaseKeptAt.set(leaseId, now);
    this.#ctx.keeper.keepAlive(leaseId);
  }

  // ---- deadlines ------------------------------------------------------------------------

  /** Runs what is due: expiries, idle streams, lease keep-alives, ends of waits, handoffs, versions. */
  tick(now: number): void {
    if (this.#state !== "serving") return;
    for (const key of this.#deadlines.due(now)) {
      if (key === REBALANCE) this.#rebalanceDue();
      else if (key === HANDOFF) this.#handoffDue(now);
      else if (key === ADOPT) this.#flushAdoptions();
      else {
        const m = this.#members.get(key);
        if (m !== undefined) this.#memberDue(m, now);
      }
    }
  }

  #scheduleMember(m: GroupMember, now: number): void {
    if (m.removing) return;
    const { options } = this.#ctx;
    const s = this.#ctx.settings();
    let next = m.stoppedAt !== undefined ? m.stoppedAt + options.restartGraceMs : m.lastHeard + s.expiryMs;
    if (m.session !== undefined && !m.session.closed) next = Math.min(next, m.lastHeard + idleMs(s));
    if (m.heardSinceKeepAlive || m.stoppedAt !== undefined)
      next = Math.min(next, m.lastKeepAliveAt + keepAliveEveryMs(options));
    if (m.priorFenceUntil > now) next = Math.min(next, m.priorFenceUntil);
    this.#deadlines.schedule(m.record.nodeId, Math.max(next, now + 1));
  }

  #memberDue(m: GroupMember, now: number): void {
    if (m.removing) return;
    const { options } = this.#ctx;
    const s = this.#ctx.settings();
    if (m.stoppedAt !== undefined) {
      if (now - m.stoppedAt >= options.restartGraceMs) {
        void this.#remove(m, "restart_grace_expired", {
          code: status.UNAVAILABLE,
          details: "restart grace over",
        }).catch((e: unknown) => this.#writeFailed("restart_grace_expired", e));
        return;
      }
    } else if (now - m.lastHeard > s.expiryMs) {
      void this.#remove(m, "session_timeout", {
        code: status.UNAVAILABLE,
        details: "expelled: no heartbeat within the session timeout",
      }).catch((e: unknown) => this.#writeFailed("session_timeout", e));
      return;
    }
    if (m.session !== undefined && !m.session.closed && now - m.lastHeard > idleMs(s)) {
      m.session.close({
        code: status.UNAVAILABLE,
        details: `no heartbeat for ${Math.round(now - m.lastHeard)} ms: closing idle stream`,
      });
    }
    if (
      (m.heardSinceKeepAlive || m.stoppedAt !== undefined) &&
      now - m.lastKeepAliveAt >= keepAliveEveryMs(options)
    ) {
      this.#keepLease(m.leaseId, now);
      m.lastKeepAliveAt = now;
      m.heardSinceKeepAlive = false;
    }
    if (m.record.state === "waiting" && mayRun(m, now)) {
      void this.#endWait(m).catch((e: unknown) => this.#writeFailed("end_wait", e));
    }
    this.#scheduleMember(m, now);
  }

  /** The earlier incarnation has provably stopped: the live one may run its shards now. */
  #endWait(m: GroupMember): Promise<void> {
    return this.#serial(async () => {
      if (m.removing || this.#members.get(m.record.nodeId) !== m || m.record.state !== "waiting") return;
      const now = this.#ctx.now();
      if (!mayRun(m, now)) return;
      // etcd first: FetchShardData (any replica) checks the record before serving the shard.
      const record: MemberRecord = { ...m.record, state: m.stoppedAt === undefined ? "active" : "released" };
      await this.#putMember(record, m.leaseId);
      m.record = record;
      this.#ctx.log.info({
        event: "member_wait_over",
        group: this.#ctx.group,
        node: m.record.nodeId,
        incarnation: m.record.incarnation,
      });
      this.#announce(m);
      this.#ctx.tasks?.kick(this.#ctx.group);
    });
  }

  #handoffDue(now: number): void {
    const h = this.#handoff;
    if (h === undefined) return;
    const { log, group } = this.#ctx;
    if (h.awaiting.size > 0 && now >= h.deadline) {
      // A loser that is alive but does not release within the bound is expelled; it stops
      // acting at its self-fence, which the version then outwaits.
      for (const nodeId of [...h.awaiting]) {
        const m = this.#members.get(nodeId);
        // Stays awaited until its removal commits (#remove drops it then); a failed removal
        // is retried at the next deadline instead of letting the version activate without it.
        if (m === undefined) h.awaiting.delete(nodeId);
        else if (!m.removing) {
          log.warn({ event: "release_overdue", group, node: nodeId, version: h.version });
          void this.#remove(m, "release_timeout", {
            code: status.FAILED_PRECONDITION,
            details: "expelled: did not release shards in time",
          }).catch((e: unknown) => this.#writeFailed("release_timeout", e));
        }
      }
    }
    this.#maybeActivate();
    if (this.#handoff === h) {
      const next =
        h.awaiting.size > 0 && now < h.deadline
          ? h.deadline
          : Math.max(h.fencesUntil, now + this.#retryDelayMs());
      this.#deadlines.schedule(HANDOFF, next);
    }
  }

  /** Removes a member: etcd key and lease (when `write`), stream, pending release. */
  #remove(m: GroupMember, why: string, st: StreamStatus, write = true): Promise<void> {
    m.removing = true;
    return this.#serial(async () => {
      const { store, keys, group, keeper, log } = this.#ctx;
      const nodeId = m.record.nodeId;
      // A rejoin queued before this removal may have replaced the member (new lease, new
      // key): then only the old membership's lease goes, never the new member's key.
      const current = this.#members.get(nodeId) === m;
      try {
        if (write && current) await store.commit(store.client.delete().key(keys.member(group, nodeId)));
      } catch (e) {
        m.removing = false; // retried at its next deadline
        this.#scheduleMember(m, this.#ctx.now() + this.#retryDelayMs());
        throw e;
      }
      // A lease shared with other members stays theirs; the last one out revokes it.
      if (this.#detachLease(m)) {
        if (write) void keeper.revoke(m.leaseId).catch(() => undefined);
        keeper.forget(m.leaseId);
      }
      this.#deadlines.cancel(nodeId);
      if (current) this.#members.delete(nodeId);
      m.session?.close(st);
      if (!current) return;
      // An incarnation that left cleanly stopped first; one expelled while alive, or whose
      // lease vanished, stops at its fence; a waiting one's predecessor at its own.
      const now = this.#ctx.now();
      const until =
        why === "leave"
          ? m.priorFenceUntil
          : supersededUntil(liveIncarnation(m, now), this.#ctx.settings().fenceMs);
      // Remembered even when already over: "removed by us, stopped" beats "unknown past".
      this.#tombstones.set(nodeId, until);
      this.#ctx.tasks?.incarnationEnded(group, nodeId, until);
      this.#ctx.metrics?.memberRemoved(group, why);
      this.#pruneTombstones(now);
      const h = this.#handoff;
      if (h?.awaiting.delete(nodeId) === true && until > now) {
        h.fencesUntil = Math.max(h.fencesUntil, until);
        await this.#persistHandoff(h);
      }
      if (m.corrupt !== undefined) this.#recheckMembersValid();
      log.info({
        event: why === "leave" ? "member_left" : "member_expelled",
        why,
        group,
        node: nodeId,
        incarnation: m.record.incarnation,
        members: this.#members.size,
        fenceMs: until > now ? Math.round(until - now) : 0,
      });
      this.#maybeActivate();
      this.#scheduleRebalance(why);
    });
  }

  /**
   * Until when an incarnation of a node id that is not a member may still run: one we removed
   * while it was alive, until its fence; one removed before we led, until one session timeout
   * after our takeover (whatever our predecessor acked, it acked before that).
   */
  #goneFenceUntil(nodeId: string): number {
    return this.#tombstones.get(nodeId) ?? this.#ctx.leaderStart + this.#ctx.settings().fenceMs;
  }

  /** Forgets removals whose fence is over once the default for unknown ones is over too. */
  #pruneTombstones(now: number): void {
    if (this.#tombstones.size < 64 || now < this.#ctx.leaderStart + this.#ctx.settings().fenceMs) return;
    for (const [nodeId, until] of this.#tombstones) if (until < now) this.#tombstones.delete(nodeId);
  }

  // ---- tasks: what the dispatcher sees ------------------------------------------------

  /** Whether `session` is the live incarnation of its node, one that may run work now. */
  isLive(session: WorkerSession): boolean {
    const m = this.#members.get(session.nodeId);
    return m !== undefined && m.session === session && !m.removing && mayRun(m, this.#ctx.now());
  }

  /** Whether `nodeId` is a member (any incarnation). */
  hasMember(nodeId: string): boolean {
    return this.#members.has(nodeId);
  }

  placementWorkers(running: (nodeId: string) => number): PlacementWorker[] {
    const now = this.#ctx.now();
    const out: PlacementWorker[] = [];
    for (const m of this.#members.values()) {
      const accepting =
        !m.removing &&
        m.stoppedAt === undefined &&
        m.session?.open === true &&
        mayRun(m, now) &&
        !this.#ownershipUnknown &&
        !this.#control.paused &&
        !this.#control.drained.has(m.record.nodeId);
      out.push({
        nodeId: m.record.nodeId,
        labels: m.record.labels,
        slots: this.#capacityOf(m),
        running: running(m.record.nodeId),
        cpuPercent: m.load.cpuPercent,
        eventLoopDelayMs: m.load.eventLoopDelayMs,
        memoryRssBytes: m.load.memoryRssBytes,
        queueLength: m.load.queueLength,
        accepting,
      });
    }
    return out;
  }

  shardOwnership(): ShardOwnership | undefined {
    const a = this.#assignment;
    if (a === undefined || this.#ownershipUnknown) return undefined;
    const owners = new Map<number, string>();
    const moving = new Set<number>();
    if (a.phase === "active") {
      for (const [nodeId, shards] of Object.entries(a.owners)) for (const s of shards) owners.set(s, nodeId);
    } else {
      // Pending: the previous owners still hold what does not move; what moves waits.
      const prev = new Map<number, string>();
      for (const [nodeId, shards] of Object.entries(a.previousOwners))
        for (const s of shards) prev.set(s, nodeId);
      for (const [nodeId, shards] of Object.entries(a.owners))
        for (const s of shards) {
          if (a.previousTotalShards === a.totalShards && prev.get(s) === nodeId) owners.set(s, nodeId);
          else moving.add(s);
        }
    }
    return { version: a.version, totalShards: a.totalShards, owners, moving };
  }

  send(nodeId: string, kind: CoordinatorMessageKind): boolean {
    const m = this.#members.get(nodeId);
    if (m === undefined || m.removing || m.session === undefined || !m.session.open) return false;
    if (kind?.case === "task") this.#noteShown(m);
    m.session.send(kind);
    return true;
  }

  /** Whether the assignment gives `nodeId` shards (or did, while a version is pending). */
  #ownsSomething(nodeId: string): boolean {
    const a = this.#assignment;
    if (a === undefined) return false;
    const has = (o: Readonly<Record<string, readonly number[]>>) =>
      Object.hasOwn(o, nodeId) && (o[nodeId]?.length ?? 0) > 0;
    return has(a.owners) || has(a.previousOwners);
  }

  // ---- operator keys ----------------------------------------------------------------------

  #startWatch(fromRevision: string | undefined): void {
    const { client, keys, group, log } = this.#ctx;
    this.#watch = new ControlWatch(
      client,
      [keys.config(group), keys.control(group)],
      (key, value) => this.#operatorKeyChanged(key, value),
      log,
    );
    this.#watch.start(fromRevision);
  }

  #operatorKeyChanged(key: string, raw: string | undefined): void {
    if (this.#state !== "serving") return;
    const { keys, group, log } = this.#ctx;
    if (key === keys.config(group)) {
      if (raw === undefined) {
        this.#applyConfig(undefined, { kind: "missing" });
      } else {
        try {
          const config = parseRecord(groupConfigSchema, key, raw);
          this.#applyConfig(config, { kind: "ok" });
          log.info({
            event: "group_config_applied",
            group,
            strategy: config.strategy,
            shards: config.shards,
          });
        } catch (e) {
          this.#applyConfig(undefined, { kind: "invalid", error: String(e) });
        }
      }
      this.#scheduleRebalance("config_changed");
      // A new data source changes the locations in every view, even when no shard moves.
      if (this.#state === "serving") this.#broadcast();
      return;
    }
    if (key === keys.control(group)) {
      let control: GroupControl = {};
      if (raw !== undefined) {
        try {
          control = parseRecord(groupControlSchema, key, raw);
          this.#undegrade("control_invalid");
        } catch (e) {
          this.#degrade("control_invalid", String(e));
          log.error({ event: "group_control_invalid", group, err: String(e) });
          return;
        }
      }
      const id = control.repair?.id;
      if (id !== undefined && id !== this.#repairId) {
        this.#repairId = id;
        this.#repair(id);
      }
      this.#applyControl(control, true);
    }
  }

  /**
   * Applies the operator's switches: paused (no versions, no dispatch), drained nodes (no
   * shards in the next version, no new tasks; told with a DRAIN command), capacity overrides
   * (sticky weight and task slots; told with SET_CAPACITY). `live`: not at load (the commands
   * then go out when each worker says Hello).
   */
  #applyControl(c: GroupControl, live: boolean): void {
    const before = this.#control;
    const next = {
      paused: c.paused === true,
      drained: new Set(c.drained ?? []),
      capacity: new Map(Object.entries(c.capacity ?? {})),
    };
    this.#control = next;
    if (!live) return;
    const { log, group } = this.#ctx;
    if (before.paused !== next.paused) {
      log.warn({ event: next.paused ? "group_paused" : "group_resumed", group });
      // Every connected member hears it (PAUSE/RESUME; the SDK surfaces it as an event).
      for (const m of this.#members.values())
        if (m.session !== undefined && !m.session.closed)
          this.#command(m.record.nodeId, {
            kind: next.paused ? CommandKind.PAUSE : CommandKind.RESUME,
            reason: next.paused ? "group paused by an operator" : "group resumed by an operator",
          });
      if (!next.paused && this.#rebalanceOnResume) {
        this.#rebalanceOnResume = false;
        this.#scheduleRebalance("resumed");
      }
      this.#ctx.tasks?.kick(group);
    }
    let reshape = false;
    for (const n of next.drained)
      if (!before.drained.has(n)) {
        log.warn({ event: "member_draining", group, node: n });
        this.#command(n, { kind: CommandKind.DRAIN, reason: "drained by an operator" });
        reshape = true;
      }
    for (const n of before.drained) if (!next.drained.has(n)) reshape = true;
    for (const [n, cap] of next.capacity)
      if (before.capacity.get(n) !== cap) {
        log.info({ event: "member_capacity_set", group, node: n, capacity: cap });
        this.#command(n, { kind: CommandKind.SET_CAPACITY, capacity: cap, reason: "set by an operator" });
        reshape = true;
      }
    for (const n of before.capacity.keys()) if (!next.capacity.has(n)) reshape = true;
    if (reshape) this.#scheduleRebalance("control_changed");
    this.#ctx.tasks?.kick(group);
  }

  /** A member's capacity in force: the operator's override, else what its worker said. */
  #capacityOf(m: GroupMember): number {
    return this.#control.capacity.get(m.record.nodeId) ?? m.record.capacity;
  }

  #commandId = 0n;

  /** Sends a control command to the member's live stream (recorded in etcd, so it is sent again on its next Hello). */
  #command(nodeId: string, c: { kind: CommandKind; reason: string; capacity?: number }): void {
    this.#commandId += 1n;
    this.send(nodeId, {
      case: "command",
      value: {
        commandId: this.#commandId,
        kind: c.kind,
        reason: c.reason,
        leaderEpoch: BigInt(this.#ctx.epoch),
        ...(c.capacity === undefined ? {} : { capacity: c.capacity }),
      },
    });
  }

  /** After a Welcome: the standing switches that concern this node. */
  #standingCommands(nodeId: string): void {
    if (this.#control.paused)
      this.#command(nodeId, { kind: CommandKind.PAUSE, reason: "group paused by an operator" });
    if (this.#control.drained.has(nodeId))
      this.#command(nodeId, { kind: CommandKind.DRAIN, reason: "drained by an operator" });
    const cap = this.#control.capacity.get(nodeId);
    if (cap !== undefined)
      this.#command(nodeId, { kind: CommandKind.SET_CAPACITY, capacity: cap, reason: "set by an operator" });
  }

  /**
   * The group config in force: the operator's when valid. An invalid one never silently falls
   * back to the replica's defaults (that could flip the strategy and reshuffle the group): the
   * last good one stays, or, after a failover, the shape of the current assignment.
   */
  #applyConfig(
    config: GroupConfig | undefined,
    how: { kind: "missing" | "ok" | "invalid"; error?: string },
  ): void {
    if (how.kind === "invalid") {
      this.#degrade("config_invalid", how.error ?? "invalid");
      this.#ctx.log.error({
        event: "group_config_invalid",
        group: this.#ctx.group,
        err: how.error,
        action: "keeping the last good config",
      });
      return;
    }
    this.#undegrade("config_invalid");
    this.#config = config ?? {};
    // Views carry the data locations the config's source gives.
    this.#views.clear();
  }

  #effectiveConfig(): { strategy: StrategyName; shards: number } | undefined {
    const s = this.#ctx.settings();
    const c = this.#config;
    if (c !== undefined) return { strategy: c.strategy ?? s.strategy, shards: c.shards ?? s.shards };
    const a = this.#assignment;
    if (a !== undefined)
      return { strategy: a.strategy, shards: a.strategy === "sticky" ? a.totalShards : s.shards };
    return undefined;
  }

  /** `coordinator repair`: a fresh, higher version from live members, everyone releasing first. */
  #repair(id: string): void {
    this.#ctx.log.warn({
      event: "repair_requested",
      group: this.#ctx.group,
      repair: id,
      version: this.#assignment?.version ?? 0,
      floor: this.#versionFloor,
    });
    this.#undegrade("assignment_invalid");
    this.#ownershipUnknown = true;
    this.#views.clear();
    // A repair does not wait for a pending version that may never complete.
    this.#handoff = undefined;
    this.#deadlines.cancel(HANDOFF);
    if (this.#assignment?.phase === "pending") this.#setAssignment({ ...this.#assignment, phase: "active" });
    this.#broadcast();
    this.#scheduleRebalance("repair");
  }

  #degrade(reason: DegradedReason, message: string): void {
    this.#degraded.set(reason, message);
  }

  #undegrade(reason: DegradedReason): void {
    if (this.#degraded.delete(reason))
      this.#ctx.log.info({ event: "group_recovered", group: this.#ctx.group, reason });
  }

  #recheckMembersValid(): void {
    const bad = [...this.#members.values()].find((m) => m.corrupt !== undefined);
    if (bad === undefined) this.#undegrade("member_invalid");
    else this.#degrade("member_invalid", `member ${bad.record.nodeId}: ${bad.corrupt}`);
  }

  // ---- versions -----------------------------------------------------------------------

  #scheduleRebalance(reason: string): void {
    if (this.#state === "closed") return;
    this.#deadlines.schedule(REBALANCE, this.#debounce.change(this.#ctx.now(), reason));
  }

  #rebalanceDue(): void {
    const reasons = this.#debounce.take();
    void this.#serial(() => this.#rebalance(reasons.join(","))).then(
      () => {
        this.#writeFailures = 0;
      },
      (e: unknown) => {
        this.#writeFailed("rebalance", e);
        if (CoordinatorError.from(e).code !== "deposed")
          this.#deadlines.schedule(REBALANCE, this.#ctx.now() + this.#retryDelayMs());
      },
    );
  }

  async #rebalance(reason: string): Promise<void> {
    if (this.#state !== "serving") return;
    const { store, keys, group, epoch, log } = this.#ctx;
    if (this.#degraded.has("assignment_invalid")) return; // waits for `coordinator repair`
    if (this.#assignment?.phase === "pending") {
      this.#rebalanceAfterHandoff = true;
      return;
    }
    if (this.#control.paused) {
      this.#rebalanceOnResume = true;
      log.info({ event: "rebalance_paused", group, reason });
      return;
    }
    const config = this.#effectiveConfig();
    if (config === undefined) {
      log.warn({ event: "rebalance_waiting_for_config", group, reason });
      return;
    }
    const { strategy, shards } = config;
    const before = this.#assignment;
    const previous: Plan | undefined =
      before === undefined ? undefined : { totalShards: before.totalShards, owners: before.owners };
    const members = [...this.#members.values()].filter((m) => !m.removing);
    // Drained members stay members (they may still be releasing) but are given nothing.
    const planned = members.filter((m) => !this.#control.drained.has(m.record.nodeId));
    const plan = planAssignment({
      strategy,
      members: planned.map((m) => ({ nodeId: m.record.nodeId, capacity: Math.max(1, this.#capacityOf(m)) })),
      shardCount: shards,
      previous,
    });
    if (
      !this.#ownershipUnknown &&
      before !== undefined &&
      previous !== undefined &&
      before.strategy === strategy &&
      ownersEqual(previous, plan)
    )
      return;
    if (before === undefined && members.length === 0 && !this.#ownershipUnknown) return;
    const now = this.#ctx.now();
    const ho = planHandoff({
      before:
        before === undefined
          ? undefined
          : { totalShards: before.totalShards, strategy: before.strategy, owners: before.owners },
      next: { totalShards: plan.totalShards, strategy, owners: plan.owners },
      unknownOwnership: this.#ownershipUnknown,
      members: members.map((m) => m.record.nodeId),
      state: (nodeId) => {
        const m = this.#members.get(nodeId);
        return m === undefined || m.removing
          ? { kind: "gone", until: this.#goneFenceUntil(nodeId) }
          : runState(m, now);
      },
      // Nodes we cannot name (gone before we led) and those we removed while they may run.
      unknownGoneUntil: Math.max(
        this.#ctx.leaderStart + this.#ctx.settings().fenceMs,
        ...this.#tombstones.values(),
      ),
    });
    const fencesUntil = ho.fencesUntil > now ? ho.fencesUntil : Number.NEGATIVE_INFINITY;
    const pending = ho.awaiting.length > 0 || fencesUntil > now;
    const version = Math.max(before?.version ?? 0, this.#versionFloor) + 1;
    const record: AssignmentRecord = {
      version,
      phase: pending ? "pending" : "active",
      totalShards: plan.totalShards,
      strategy,
      owners: plain(plan.owners),
      awaitingRelease: ho.awaiting,
      previousOwners: pending && before !== undefined ? plain(before.owners) : {},
      previousTotalShards: pending && before !== undefined ? before.totalShards : 0,
      ...(fencesUntil > now ? { fencesUntil: new Date(Date.now() + (fencesUntil - now)).toISOString() } : {}),
      leaderEpoch: epoch,
      updatedAt: new Date().toISOString(),
    };
    await store.commit(store.client.put(keys.assignment(group)).value(JSON.stringify(record)));
    const wasUnknown = this.#ownershipUnknown;
    this.#ownershipUnknown = false;
    this.#versionFloor = version;
    this.#setAssignment(record);
    if (pending) {
      this.#handoff = {
        version,
        writtenAt: now,
        awaiting: new Set(ho.awaiting),
        deadline: now + this.#ctx.settings().expiryMs,
        fencesUntil,
      };
      this.#deadlines.schedule(
        HANDOFF,
        ho.awaiting.length > 0 ? now + this.#ctx.settings().expiryMs : fencesUntil,
      );
    }
    this.#ctx.metrics?.versionWritten(group, record.phase);
    log.info({
      event: "version_written",
      reason,
      group,
      version,
      phase: record.phase,
      totalShards: record.totalShards,
      strategy,
      members: this.#members.size,
      awaitingRelease: ho.awaiting,
      fencesMs: fencesUntil > now ? Math.round(fencesUntil - now) : 0,
      ownershipWasUnknown: wasUnknown,
    });
    this.#broadcast();
  }

  /**
   * Writes what a pending version now waits for (awaited losers, fences) into its record, so
   * that a new leader outwaits the same fences (it restarts them from its takeover). Runs
   * inside the group's serial queue.
   */
  async #persistHandoff(h: Handoff): Promise<void> {
    const a = this.#assignment;
    if (a === undefined || a.version !== h.version || a.phase !== "pending") return;
    const { store, keys, group } = this.#ctx;
    const now = this.#ctx.now();
    const record: AssignmentRecord = {
      ...a,
      awaitingRelease: [...h.awaiting].sort(),
      ...(h.fencesUntil > now
        ? { fencesUntil: new Date(Date.now() + (h.fencesUntil - now)).toISOString() }
        : {}),
      updatedAt: new Date().toISOString(),
    };
    await store.commit(store.client.put(keys.assignment(group)).value(JSON.stringify(record)));
    this.#setAssignment(record);
  }

  #maybeActivate(): void {
    const h = this.#handoff;
    if (h === undefined || this.#state !== "serving") return;
    const now = this.#ctx.now();
    if (!mayActivate(h.awaiting, h.fencesUntil, now)) {
      // Blocked only by fences: look again when they end.
      if (h.awaiting.size === 0) this.#deadlines.schedule(HANDOFF, h.fencesUntil);
      return;
    }
    this.#handoff = undefined;
    void this.#serial(async () => {
      const a = this.#assignment;
      if (a === undefined || a.version !== h.version || a.phase !== "pending") return;
      const { store, keys, group, epoch, log } = this.#ctx;
      const record: AssignmentRecord = {
        ...a,
        phase: "active",
        awaitingRelease: [],
        previousOwners: {},
        previousTotalShards: 0,
        leaderEpoch: epoch,
        updatedAt: new Date().toISOString(),
      };
      delete record.fencesUntil;
      await store.commit(store.client.put(keys.assignment(group)).value(JSON.stringify(record)));
      this.#setAssignment(record);
      this.#writeFailures = 0;
      const pendingMs = Math.round(this.#ctx.now() - h.writtenAt);
      this.#ctx.metrics?.versionActivated(group, pendingMs);
      log.info({
        event: "version_active",
        group,
        version: record.version,
        totalShards: record.totalShards,
        pendingMs,
      });
      this.#broadcast();
      if (this.#rebalanceAfterHandoff) {
        this.#rebalanceAfterHandoff = false;
        this.#scheduleRebalance("deferred");
      }
    }).catch((e: unknown) => {
      this.#writeFailed("activate", e);
      if (CoordinatorError.from(e).code !== "deposed" && this.#handoff === undefined) {
        this.#handoff = h; // retried at the next deadline, with backoff
        this.#deadlines.schedule(HANDOFF, this.#ctx.now() + this.#retryDelayMs());
      }
    });
  }

  /** Tells every connected member its view (a new version or phase). */
  #broadcast(): void {
    for (const m of this.#members.values()) this.#announce(m);
    // Shard ownership changed: shard-placed tasks may move or start.
    this.#ctx.tasks?.kick(this.#ctx.group);
  }

  #announce(m: GroupMember): void {
    if (m.session === undefined || m.session.closed || !m.session.open) return;
    this.#noteShown(m);
    const v = this.view(m.record.nodeId);
    if (v !== undefined) m.session.send({ case: "assignment", value: v });
  }

  // ---- etcd writes ----------------------------------------------------------------------

  async #putMember(record: MemberRecord, leaseId: string): Promise<void> {
    const { store, keys, group } = this.#ctx;
    await store.commit(
      store.client.put(keys.member(group, record.nodeId)).value(JSON.stringify(record)).lease(leaseId),
    );
  }

  /** Records, in batches, that a member is now served by this replica (after a failover). */
  #adopt(nodeId: string): void {
    this.#adoptions.add(nodeId);
    if (this.#deadlines.deadlineOf(ADOPT) === undefined)
      this.#deadlines.schedule(ADOPT, this.#ctx.now() + 100);
  }

  #flushAdoptions(): void {
    const batch = [...this.#adoptions].slice(0, 100);
    for (const n of batch) this.#adoptions.delete(n);
    if (this.#adoptions.size > 0) this.#deadlines.schedule(ADOPT, this.#ctx.now() + 20);
    void this.#serial(async () => {
      const { store, keys, group, options } = this.#ctx;
      const ops = [];
      const updated: [GroupMember, MemberRecord][] = [];
      for (const nodeId of batch) {
        const m = this.#members.get(nodeId);
        if (m === undefined || m.removing || m.record.replica === options.id) continue;
        const record = { ...m.record, replica: options.id };
        ops.push(store.client.put(keys.member(group, nodeId)).value(JSON.stringify(record)).lease(m.leaseId));
        updated.push([m, record]);
      }
      if (ops.length === 0) return;
      await store.commit(...ops);
      for (const [m, record] of updated) if (m.record.incarnation === record.incarnation) m.record = record;
    }).catch((e: unknown) => this.#writeFailed("adopt", e));
  }

  #writeFailed(op: string, e: unknown): void {
    const err = CoordinatorError.from(e);
    if (err.code === "deposed" || this.#state === "closed") return;
    this.#lastFailureKind = classifyEtcdError(e);
    this.#writeFailures += 1;
    const retryInMs = Math.round(this.#retryDelayMs());
    const extra = { group: this.#ctx.group, code: err.code };
    if (this.#ctx.health !== undefined) this.#ctx.health.failed(op, e, retryInMs, extra);
    else this.#ctx.log.warn({ event: "etcd_write_failed", op, ...extra, err: err.message, retryInMs });
  }

  /**
   * Backoff for retried writes, by what failed: NOSPACE waits for an operator (2 s growing to
   * 10 s), an unreachable etcd 1 s to 5 s; never a hot loop.
   */
  #retryDelayMs(): number {
    return backoffDelayMs(Math.max(0, this.#writeFailures - 1), etcdRetryBackoff(this.#lastFailureKind));
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Stops the watch and every stream (leadership lost or replica stopping). */
  close(st: StreamStatus): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    void this.#watch?.close();
    for (const m of this.#members.values()) m.session?.close(st);
  }

  /** Waits for queued etcd work to settle (used on graceful shutdown). */
  async drain(): Promise<void> {
    await this.#queue;
    await this.#watch?.close();
  }
}

function unavailable(details: string): StreamStatus {
  return { code: status.UNAVAILABLE, details };
}

/** A member's lease is renewed at most this often (a third of its TTL, as etcd's clients do). */
function keepAliveEveryMs(options: ReplicaOptions): number {
  return (options.memberLeaseTtlSec * 1000) / 3;
}

/** A stream silent this long is closed (the member stays until its session times out). */
function idleMs(s: EffectiveSettings): number {
  return Math.min(3 * s.heartbeatIntervalMs, s.sessionTimeoutMs * 0.8);
}

function plain(owners: Owners): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(owners)) out[k] = [...v];
  return out;
}
