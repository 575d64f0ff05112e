import { createHash, randomBytes } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { AssignmentPhase, type AssignmentSchema, type Heartbeat, type Hello, type Release } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { FencedStore } from "../leadership/fenced-store.js";
import type { LeaseKeeper } from "../leadership/lease-keeper.js";
import type { ReplicaOptions } from "../replica/replica-options.js";
import type { StreamStatus, WorkerSession } from "../server/worker-session.js";
import { type Owners, ownersEqual, type Plan, planAssignment, primaryShard } from "../sharding/assignment.js";
import type { KeyLayout } from "../store/keys.js";
import {
  type AssignmentRecord,
  assignmentRecordSchema,
  type GroupConfig,
  groupConfigSchema,
  type MemberRecord,
  memberRecordSchema,
  parseRecord,
} from "../store/records.js";

/** What a group needs from the leader that owns it. */
export interface GroupContext {
  readonly group: string;
  readonly options: ReplicaOptions;
  readonly epoch: number;
  readonly keys: KeyLayout;
  readonly client: Etcd3;
  readonly store: FencedStore;
  readonly keeper: LeaseKeeper;
  readonly log: Logger;
  /** Monotonic milliseconds (performance.now()). */
  now(): number;
}

interface Member {
  record: MemberRecord;
  leaseId: string;
  lastSeen: number;
  lastKeepAliveAt: number;
  heardSinceKeepAlive: boolean;
  session: WorkerSession | undefined;
  expelling: boolean;
  load: number;
}

interface Handoff {
  readonly version: number;
  readonly awaiting: Set<string>;
  /** After this, losers that have not released are expelled. */
  readonly deadline: number;
  /** Expelled-but-alive losers fence themselves by then; gainers must not start before. */
  activateNotBefore: number;
}

export type AssignmentView = MessageInitShape<typeof AssignmentSchema>;

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const newToken = () => randomBytes(18).toString("base64url");
const capacityOf = (c: number) => (Number.isInteger(c) && c > 0 ? c : 1);

/**
 * One worker group on the leader: membership (in memory, mirrored to lease-bound etcd keys),
 * the rebalance debounce, and the cooperative handoff of each new version
 * (pending → every loser releases or is expelled → active). Heartbeats never touch etcd.
 * All etcd mutations of a group run one at a time, in order.
 */
export class Group {
  readonly #ctx: GroupContext;
  readonly #members = new Map<string, Member>();
  #assignment: AssignmentRecord | undefined;
  #views: { record: AssignmentRecord | undefined; byNode: Map<string, AssignmentView> } = {
    record: undefined,
    byNode: new Map(),
  };
  #handoff: Handoff | undefined;
  #rebalanceTimer: NodeJS.Timeout | undefined;
  #rebalanceAfterHandoff = false;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(ctx: GroupContext) {
    this.#ctx = ctx;
  }

  /** An empty group (first worker of a new group). */
  static empty(ctx: GroupContext): Group {
    return new Group(ctx);
  }

  /**
   * A group as the previous leader left it in etcd: members keep their leases and get one
   * session timeout of grace to reconnect; the assignment stays exactly as it was.
   */
  static async load(ctx: GroupContext): Promise<Group> {
    const g = new Group(ctx);
    const { client, keys, group } = ctx;
    const [members, assignment] = await Promise.all([
      client.getAll().prefix(keys.membersPrefix(group)).exec(),
      client.get(keys.assignment(group)).string(),
    ]);
    const now = ctx.now();
    for (const kv of members.kvs) {
      const key = kv.key.toString();
      try {
        const record = parseRecord(memberRecordSchema, key, kv.value.toString());
        g.#members.set(record.nodeId, {
          record,
          leaseId: kv.lease,
          lastSeen: now,
          lastKeepAliveAt: now - Math.random() * keepAliveEveryMs(ctx.options),
          heardSinceKeepAlive: false,
          session: undefined,
          expelling: false,
          load: 0,
        });
        // Extend the adopted lease at once: the grace period must not outlive it.
        ctx.keeper.keepAlive(kv.lease);
      } catch (e) {
        ctx.log.error({ event: "member_record_invalid", group, key, err: String(e) });
      }
    }
    if (assignment !== null) {
      g.#assignment = parseRecord(assignmentRecordSchema, keys.assignment(group), assignment);
      if (g.#assignment.phase === "pending") {
        const awaiting = new Set(g.#assignment.awaitingRelease.filter((n) => g.#members.has(n)));
        g.#handoff = {
          version: g.#assignment.version,
          awaiting,
          deadline: now + ctx.options.sessionTimeoutMs,
          activateNotBefore: 0,
        };
      }
    }
    ctx.log.info({
      event: "group_loaded",
      group,
      members: g.#members.size,
      version: g.#assignment?.version ?? 0,
      phase: g.#assignment?.phase ?? null,
    });
    // Only bumps the version if membership and assignment disagree (the plan is idempotent).
    g.#scheduleRebalance("leader_loaded");
    return g;
  }

  get name(): string {
    return this.#ctx.group;
  }

  get assignment(): AssignmentRecord | undefined {
    return this.#assignment;
  }

  /** A snapshot for the status view. */
  snapshot(): {
    group: string;
    members: { nodeId: string; connected: boolean; lastSeenMsAgo: number; capacity: number; load: number }[];
    assignment: AssignmentRecord | undefined;
  } {
    const now = this.#ctx.now();
    return {
      group: this.#ctx.group,
      members: [...this.#members.values()].map((m) => ({
        nodeId: m.record.nodeId,
        connected: m.session?.open === true,
        lastSeenMsAgo: Math.round(now - m.lastSeen),
        capacity: m.record.capacity,
        load: m.load,
      })),
      assignment: this.#assignment,
    };
  }

  /** The assignment as one node sees it. */
  view(nodeId: string): AssignmentView | undefined {
    const a = this.#assignment;
    if (a === undefined) return undefined;
    // Heartbeat acks ask for this thousands of times per second; it only changes with the
    // assignment record, so it is computed once per record and node.
    if (this.#views.record !== a) this.#views = { record: a, byNode: new Map() };
    const cached = this.#views.byNode.get(nodeId);
    if (cached !== undefined) return cached;
    const shards = a.owners[nodeId] ?? [];
    const view: AssignmentView = {
      version: BigInt(a.version),
      phase: a.phase === "active" ? AssignmentPhase.ACTIVE : AssignmentPhase.PENDING,
      totalShards: a.totalShards,
      shardId: primaryShard(a.owners, nodeId),
      shards: [...shards],
      strategy: a.strategy,
      leaderEpoch: BigInt(a.leaderEpoch),
    };
    this.#views.byNode.set(nodeId, view);
    return view;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  // ---- stream events ------------------------------------------------------------------

  /** Admits (or resumes) a member; returns a refusal status, or undefined when welcomed. */
  join(session: WorkerSession, hello: Hello): Promise<StreamStatus | undefined> {
    return this.#serial(async () => {
      if (this.#closed) return { code: status.UNAVAILABLE, details: "leadership is changing; retry" };
      const { options, store, keys, group, keeper, log } = this.#ctx;
      const nodeId = hello.nodeId;
      const presented = hello.sessionToken === "" ? "" : sha256(hello.sessionToken);
      const capacity = capacityOf(hello.capacity);
      const labels = { ...hello.labels };
      const existing = this.#members.get(nodeId);
      if (existing !== undefined && !existing.expelling) {
        if (existing.session?.open === true) {
          if (presented === "" || presented !== existing.record.sessionHash) {
            return {
              code: status.ALREADY_EXISTS,
              details: `node ${nodeId} already has a live stream in group ${group}; only its session token may take over`,
            };
          }
          existing.session.close({
            code: status.ABORTED,
            details: "taken over by a newer stream of the same member",
          });
        }
        // A quick restart (no token) or a reconnect keeps the membership and its shards.
        let token = hello.sessionToken;
        const tokenOk = presented !== "" && presented === existing.record.sessionHash;
        const capacityChanged = capacity !== existing.record.capacity;
        if (
          !tokenOk ||
          capacityChanged ||
          JSON.stringify(labels) !== JSON.stringify(existing.record.labels)
        ) {
          if (!tokenOk) token = newToken();
          const record: MemberRecord = { ...existing.record, capacity, labels, sessionHash: sha256(token) };
          await store.commit(
            store.client
              .put(keys.member(group, nodeId))
              .value(JSON.stringify(record))
              .lease(existing.leaseId),
          );
          existing.record = record;
        }
        existing.session = session;
        existing.lastSeen = this.#ctx.now();
        existing.heardSinceKeepAlive = true;
        this.#welcome(session, token, true);
        log.info({
          event: "member_resumed",
          group,
          node: nodeId,
          version: this.#assignment?.version ?? 0,
          tokenResumed: tokenOk,
        });
        if (capacityChanged) this.#scheduleRebalance("capacity_changed");
        return undefined;
      }
      const token = newToken();
      const { leaseId } = await keeper.grant(options.memberLeaseTtlSec);
      const record: MemberRecord = {
        nodeId,
        group,
        labels,
        capacity,
        joinedAt: new Date().toISOString(),
        replica: options.id,
        sessionHash: sha256(token),
      };
      try {
        await store.commit(
          store.client.put(keys.member(group, nodeId)).value(JSON.stringify(record)).lease(leaseId),
        );
      } catch (e) {
        void keeper.revoke(leaseId).catch(() => undefined);
        throw e;
      }
      const now = this.#ctx.now();
      this.#members.set(nodeId, {
        record,
        leaseId,
        lastSeen: now,
        // Spread keep-alives over the interval: members that joined in one burst would
        // otherwise all be renewed in the same tick, a periodic stall of the event loop.
        lastKeepAliveAt: now - Math.random() * keepAliveEveryMs(options),
        heardSinceKeepAlive: false,
        session,
        expelling: false,
        load: 0,
      });
      this.#welcome(session, token, false);
      log.info({ event: "member_joined", group, node: nodeId, members: this.#members.size });
      this.#scheduleRebalance("join");
      return undefined;
    });
  }

  #welcome(session: WorkerSession, token: string, resumed: boolean): void {
    const { options, epoch } = this.#ctx;
    session.send({
      case: "welcome",
      value: {
        sessionToken: token,
        leaderEpoch: BigInt(epoch),
        leaderId: options.id,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        sessionTimeoutMs: options.sessionTimeoutMs,
        resumed,
        assignment: this.view(session.nodeId),
      },
    });
  }

  heartbeat(session: WorkerSession, hb: Heartbeat, seq: bigint): void {
    const m = this.#members.get(session.nodeId);
    if (m !== undefined && m.session === session && m.expelling) return; // leaving: no more acks
    if (m === undefined || m.session !== session) {
      session.close({
        code: status.FAILED_PRECONDITION,
        details: "no longer a member of the group (expelled); reconnect to rejoin",
      });
      return;
    }
    m.lastSeen = this.#ctx.now();
    m.heardSinceKeepAlive = true;
    m.load = hb.load;
    const v = this.view(session.nodeId);
    session.send({
      case: "heartbeatAck",
      value: {
        nodeId: session.nodeId,
        ts: hb.ts,
        accepted: true,
        totalShards: v?.totalShards ?? 0,
        shardId: v?.shardId ?? -1,
        shards: v?.shards ?? [],
        shardVersion: v?.version ?? 0n,
        phase: v?.phase ?? AssignmentPhase.UNSPECIFIED,
        active: v?.phase === AssignmentPhase.ACTIVE,
        leaderEpoch: BigInt(this.#ctx.epoch),
        heartbeatSeq: seq,
      },
    });
  }

  release(session: WorkerSession, rel: Release): void {
    const h = this.#handoff;
    if (h === undefined || BigInt(h.version) !== rel.version) return;
    if (h.awaiting.delete(session.nodeId)) {
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

  leave(session: WorkerSession): void {
    const m = this.#members.get(session.nodeId);
    if (m === undefined || m.session !== session) {
      session.close({ code: status.OK, details: "left" });
      return;
    }
    if (m.expelling) return; // a removal is already queued; it closes this stream
    void this.#remove(m, "leave", { code: status.OK, details: "left the group" }).catch((e: unknown) =>
      this.#ctx.log.warn({
        event: "leave_failed",
        group: this.#ctx.group,
        node: m.record.nodeId,
        err: String(e),
      }),
    );
  }

  detached(session: WorkerSession): void {
    const m = this.#members.get(session.nodeId);
    if (m !== undefined && m.session === session) m.session = undefined;
  }

  /** etcd says a member lease is gone (TTL 0): its key went with it. */
  leaseGone(leaseId: string): void {
    for (const m of this.#members.values()) {
      if (m.leaseId === leaseId && !m.expelling) {
        void this.#remove(
          m,
          "lease_expired",
          { code: status.UNAVAILABLE, details: "membership lease expired; reconnect to rejoin" },
          false,
        ).catch(() => undefined);
      }
    }
  }

  /** Periodic work: expiry, idle streams, member lease keep-alives, handoff deadlines. */
  tick(): void {
    if (this.#closed) return;
    const { options, keeper } = this.#ctx;
    const now = this.#ctx.now();
    const idleMs = Math.min(3 * options.heartbeatIntervalMs, options.sessionTimeoutMs * 0.8);
    const keepAliveEvery = keepAliveEveryMs(options);
    for (const m of this.#members.values()) {
      if (m.expelling) continue;
      const silent = now - m.lastSeen;
      if (silent > options.sessionTimeoutMs) {
        void this.#remove(m, "session_timeout", {
          code: status.UNAVAILABLE,
          details: "expelled: no heartbeat within the session timeout",
        }).catch(() => undefined);
        continue;
      }
      if (m.session?.open === true && silent > idleMs) {
        m.session.close({
          code: status.UNAVAILABLE,
          details: `no heartbeat for ${Math.round(silent)} ms: closing idle stream`,
        });
      }
      if (m.heardSinceKeepAlive && now - m.lastKeepAliveAt >= keepAliveEvery) {
        keeper.keepAlive(m.leaseId);
        m.lastKeepAliveAt = now;
        m.heardSinceKeepAlive = false;
      }
    }
    const h = this.#handoff;
    if (h !== undefined && h.awaiting.size > 0 && now > h.deadline) {
      // A loser that is alive but does not release within the bound is expelled; it stops
      // acting at its self-fence, at most one session timeout after our last ack to it.
      for (const nodeId of [...h.awaiting]) {
        const m = this.#members.get(nodeId);
        // Stays awaited until its removal commits (#remove drops it then); a failed removal
        // is retried on the next tick instead of letting the version activate without it.
        if (m === undefined) h.awaiting.delete(nodeId);
        else if (!m.expelling) {
          h.activateNotBefore = Math.max(h.activateNotBefore, now + options.sessionTimeoutMs);
          void this.#remove(m, "release_timeout", {
            code: status.FAILED_PRECONDITION,
            details: "expelled: did not release shards in time",
          }).catch(() => undefined);
        }
      }
    }
    this.#maybeActivate();
  }

  /** Removes a member: etcd key and lease (when `write`), stream, pending release. */
  #remove(m: Member, why: string, st: StreamStatus, write = true): Promise<void> {
    m.expelling = true;
    return this.#serial(async () => {
      const { store, keys, group, keeper, log } = this.#ctx;
      const nodeId = m.record.nodeId;
      // A rejoin queued before this removal may have replaced the member (new lease, new
      // key): then only the old incarnation's lease goes, never the new member's key.
      const current = this.#members.get(nodeId) === m;
      try {
        if (write && current) await store.commit(store.client.delete().key(keys.member(group, nodeId)));
        if (write) void keeper.revoke(m.leaseId).catch(() => undefined);
      } catch (e) {
        m.expelling = false; // retried on the next tick
        throw e;
      }
      keeper.forget(m.leaseId);
      if (current) this.#members.delete(nodeId);
      m.session?.close(st);
      if (!current) return;
      log.info({
        event: why === "leave" ? "member_left" : "member_expelled",
        why,
        group,
        node: nodeId,
        members: this.#members.size,
      });
      this.#handoff?.awaiting.delete(nodeId);
      this.#maybeActivate();
      this.#scheduleRebalance(why);
    });
  }

  // ---- versions -----------------------------------------------------------------------

  #scheduleRebalance(reason: string): void {
    if (this.#closed) return;
    clearTimeout(this.#rebalanceTimer);
    this.#rebalanceTimer = setTimeout(() => {
      this.#rebalanceTimer = undefined;
      void this.#serial(() => this.#rebalance(reason)).catch((e: unknown) => {
        this.#ctx.log.warn({ event: "rebalance_failed", group: this.#ctx.group, err: String(e) });
        if (CoordinatorError.from(e).code !== "deposed") this.#scheduleRebalance("retry");
      });
    }, this.#ctx.options.rebalanceDelayMs);
  }

  async #readConfig(): Promise<GroupConfig> {
    const { client, keys, group, log } = this.#ctx;
    const raw = await client.get(keys.config(group)).string();
    if (raw === null) return {};
    try {
      return parseRecord(groupConfigSchema, keys.config(group), raw);
    } catch (e) {
      log.error({ event: "group_config_invalid", group, err: String(e) });
      return {};
    }
  }

  async #rebalance(reason: string): Promise<void> {
    if (this.#closed) return;
    if (this.#assignment?.phase === "pending") {
      this.#rebalanceAfterHandoff = true;
      return;
    }
    const { options, store, keys, group, epoch, log } = this.#ctx;
    const config = await this.#readConfig();
    const strategy = config.strategy ?? options.strategy;
    const shardCount = config.shards ?? options.shards;
    const before = this.#assignment;
    const previous: Plan | undefined =
      before === undefined ? undefined : { totalShards: before.totalShards, owners: before.owners };
    const plan = planAssignment({
      strategy,
      members: [...this.#members.values()]
        .filter((m) => !m.expelling)
        .map((m) => ({ nodeId: m.record.nodeId, capacity: m.record.capacity })),
      shardCount,
      previous,
    });
    if (
      before !== undefined &&
      previous !== undefined &&
      before.strategy === strategy &&
      ownersEqual(previous, plan)
    )
      return;
    const losers = this.#losers(before, plan, strategy);
    const version = (before?.version ?? 0) + 1;
    const record: AssignmentRecord = {
      version,
      phase: losers.length > 0 ? "pending" : "active",
      totalShards: plan.totalShards,
      strategy,
      owners: plain(plan.owners),
      awaitingRelease: losers,
      previousOwners: losers.length > 0 && before !== undefined ? plain(before.owners) : {},
      previousTotalShards: losers.length > 0 && before !== undefined ? before.totalShards : 0,
      leaderEpoch: epoch,
      updatedAt: new Date().toISOString(),
    };
    await store.commit(store.client.put(keys.assignment(group)).value(JSON.stringify(record)));
    this.#assignment = record;
    if (losers.length > 0) {
      this.#handoff = {
        version,
        awaiting: new Set(losers),
        deadline: this.#ctx.now() + options.sessionTimeoutMs,
        activateNotBefore: 0,
      };
    }
    log.info({
      event: "version_written",
      reason,
      group,
      version,
      phase: record.phase,
      totalShards: record.totalShards,
      strategy,
      members: this.#members.size,
      awaitingRelease: losers,
    });
    this.#broadcast();
  }

  /**
   * Members that must stop shards before the new version may start. Shard ids keep their
   * meaning only while totalShards and the strategy stay the same; otherwise every previous
   * owner loses everything. Members already gone have fenced themselves.
   */
  #losers(before: AssignmentRecord | undefined, plan: Plan, strategy: string): string[] {
    if (before === undefined) return [];
    const reshaped = before.totalShards !== plan.totalShards || before.strategy !== strategy;
    const out: string[] = [];
    for (const [nodeId, shards] of Object.entries(before.owners)) {
      if (shards.length === 0) continue;
      const m = this.#members.get(nodeId);
      if (m === undefined || m.expelling) continue;
      const next = new Set(plan.owners[nodeId] ?? []);
      if (reshaped || shards.some((s) => !next.has(s))) out.push(nodeId);
    }
    return out.sort();
  }

  #maybeActivate(): void {
    const h = this.#handoff;
    if (h === undefined || h.awaiting.size > 0 || this.#closed) return;
    if (this.#ctx.now() < h.activateNotBefore) return; // tick() calls again
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
      await store.commit(store.client.put(keys.assignment(group)).value(JSON.stringify(record)));
      this.#assignment = record;
      log.info({ event: "version_active", group, version: record.version, totalShards: record.totalShards });
      this.#broadcast();
      if (this.#rebalanceAfterHandoff) {
        this.#rebalanceAfterHandoff = false;
        this.#scheduleRebalance("deferred");
      }
    }).catch((e: unknown) => {
      this.#ctx.log.warn({ event: "activate_failed", group: this.#ctx.group, err: String(e) });
      if (CoordinatorError.from(e).code !== "deposed") this.#handoff = h; // retried on the next tick
    });
  }

  #broadcast(): void {
    for (const m of this.#members.values()) {
      if (m.session?.open !== true) continue;
      const v = this.view(m.record.nodeId);
      if (v !== undefined) m.session.send({ case: "assignment", value: v });
    }
  }

  /** Stops timers and closes every stream with `st` (leadership lost or replica stopping). */
  close(st: StreamStatus): void {
    this.#closed = true;
    clearTimeout(this.#rebalanceTimer);
    for (const m of this.#members.values()) m.session?.close(st);
  }

  /** Waits for queued etcd work to settle (used on graceful shutdown). */
  async drain(): Promise<void> {
    await this.#queue;
  }
}

/** A member's lease is renewed at most this often (a third of its TTL, as etcd's clients do). */
function keepAliveEveryMs(options: ReplicaOptions): number {
  return (options.memberLeaseTtlSec * 1000) / 3;
}

function plain(owners: Owners): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(owners)) out[k] = [...v];
  return out;
}
