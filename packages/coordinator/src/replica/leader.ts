import { Metadata, status } from "@grpc/grpc-js";
import type { CommandAck, Heartbeat, Hello, Leave, Release, TaskUpdate } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import type { CoordinatorError } from "../errors.js";
import type { Leadership } from "../leadership/election.js";
import { FencedStore } from "../leadership/fenced-store.js";
import { LeaseKeeper } from "../leadership/lease-keeper.js";
import { Group, type GroupContext, type GroupMetricsSink } from "../membership/group.js";
import type { SessionHost, StreamStatus, WorkerSession } from "../server/worker-session.js";
import type { EtcdHealth } from "../store/etcd-health.js";
import type { KeyLayout } from "../store/keys.js";
import { listChildren } from "../store/paged-range.js";
import { TaskDispatcher } from "../tasks/dispatcher.js";
import { TaskBoard } from "../tasks/task-board.js";
import type { TaskMetricsSink } from "../tasks/task-ledger.js";
import { TaskStore } from "../tasks/task-store.js";
import { ClusterConfig } from "./cluster-config.js";
import type { ReplicaOptions } from "./replica-options.js";
import type { EffectiveSettings } from "./settings.js";

export interface LeaderOptions {
  readonly client: Etcd3;
  readonly keys: KeyLayout;
  readonly options: ReplicaOptions;
  readonly leadership: Leadership;
  readonly log: Logger;
  /** Whether the election fence still holds (checked before every ack and write). */
  readonly holds: () => boolean;
  /** Called once when a fenced write proves we were deposed. */
  readonly onDeposed: (e: CoordinatorError) => void;
  /** The replica's etcd health: times and counts every fenced write, logs failures once. */
  readonly health?: EtcdHealth;
  /** Where the groups count joins, removals, versions and releases, and the tasks their events (replica/metrics.ts). */
  readonly metrics?: GroupMetricsSink &
    TaskMetricsSink & { leaseKeepAlive?(lease: "election" | "members", seconds: number): void };
}

/** Groups read from etcd at once while a leadership starts. */
const loadConcurrency = 8;
/** How often deadlines are looked at (each group keeps its own deadline heap). */
const tickMs = 25;

/**
 * The leader's work while it leads: every group's membership and versions, loaded from
 * etcd at the start (so a failover keeps every assignment), and the session host for all
 * worker streams. Lives exactly as long as one leadership.
 */
export class Leader implements SessionHost {
  readonly #o: LeaderOptions;
  readonly #store: FencedStore;
  readonly #keeper: LeaseKeeper;
  readonly #groups = new Map<string, Group>();
  readonly #sessions = new Set<WorkerSession>();
  readonly #creating = new Map<string, Promise<Group>>();
  readonly #startedAt = performance.now();
  #config: ClusterConfig | undefined;
  readonly #taskStore: TaskStore;
  readonly #tasks: TaskBoard;
  readonly #dispatcher: TaskDispatcher;
  #tick: NodeJS.Timeout | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(o: LeaderOptions) {
    this.#o = o;
    this.#store = new FencedStore(
      o.client,
      o.leadership.key,
      o.leadership.epoch,
      o.holds,
      o.onDeposed,
      o.health,
    );
    this.#keeper = new LeaseKeeper(o.client, o.log, (ack) => {
      o.metrics?.leaseKeepAlive?.("members", (performance.now() - ack.sentAt) / 1000);
      if (ack.ttlSec <= 0) for (const g of this.#groups.values()) g.leaseGone(ack.leaseId);
    });
    const taskOptions = o.options.tasks;
    this.#taskStore = new TaskStore({ fenced: this.#store, keys: o.keys, options: taskOptions, log: o.log });
    this.#tasks = new TaskBoard({
      persistence: this.#taskStore,
      epoch: o.leadership.epoch,
      options: taskOptions,
      log: o.log,
      onWaiting: (group) => this.#dispatcher.kick(group),
      onCancel: (group, record) => this.#dispatcher.cancelled(group, record),
      metrics: o.metrics,
    });
    this.#dispatcher = new TaskDispatcher({
      board: this.#tasks,
      log: o.log,
      membership: (group) => this.#groups.get(group),
      now: () => performance.now(),
      epoch: o.leadership.epoch,
    });
  }

  /** The leader's tasks (what TaskService serves while this replica leads). */
  get tasks(): TaskBoard {
    return this.#tasks;
  }

  /** Reads the cluster settings, loads every group from etcd and starts the deadline tick. */
  static async start(o: LeaderOptions): Promise<Leader> {
    const leader = new Leader(o);
    try {
      leader.#config = await ClusterConfig.start({
        client: o.client,
        keys: o.keys,
        store: leader.#store,
        options: o.options,
        log: o.log,
        takeoverAt: leader.#startedAt,
        now: () => performance.now(),
      });
      await leader.#load();
    } catch (e) {
      // Loaded groups already hold watches and a keep-alive stream.
      await leader.close();
      throw e;
    }
    leader.#tick = setInterval(() => {
      const now = performance.now();
      for (const g of leader.#groups.values()) g.tick(now);
    }, tickMs);
    // Tasks in flight on workers a previous leader knew and we do not: requeued once every
    // incarnation it acknowledged has fenced itself.
    const fenceEnd = leader.#startedAt + leader.settings().fenceMs;
    for (const [name, g] of leader.#groups) leader.#dispatcher.adopt(name, (n) => g.hasMember(n), fenceEnd);
    leader.#sweep = setInterval(() => leader.#dispatcher.sweep(leader.#groups.keys()), 1000);
    o.log.info({
      event: "leader_started",
      leaderEpoch: o.leadership.epoch,
      groups: leader.#groups.size,
      loadMs: Math.round(performance.now() - leader.#startedAt),
    });
    return leader;
  }

  /**
   * Loads every group, several at a time. Group names come from one small keys-only read per
   * group (never the groups' contents), and each group reads only its members, assignment,
   * config and control keys, in pages: the cost does not grow with task or data records.
   */
  async #load(): Promise<void> {
    const o = this.#o;
    const names = await listChildren(o.client, o.keys.groupsPrefix);
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++];
        if (name === undefined) return;
        this.#groups.set(name, await Group.load(this.#context(name)));
      }
    };
    await Promise.all(Array.from({ length: Math.min(loadConcurrency, names.length) }, worker));
  }

  /**
   * A group first seen in a Hello: read from etcd all the same (an operator may have written
   * its config before any worker came), once even when many Hellos arrive together.
   */
  #create(name: string): Promise<Group> {
    let p = this.#creating.get(name);
    if (p === undefined) {
      p = Group.load(this.#context(name)).then(
        (g) => {
          this.#creating.delete(name);
          if (this.#closed) g.close(notLeader());
          else this.#groups.set(name, g);
          return g;
        },
        (e: unknown) => {
          this.#creating.delete(name);
          throw e;
        },
      );
      this.#creating.set(name, p);
    }
    return p;
  }

  get epoch(): number {
    return this.#o.leadership.epoch;
  }

  get store(): FencedStore {
    return this.#store;
  }

  get groups(): ReadonlyMap<string, Group> {
    return this.#groups;
  }

  /** The settings from this replica's flags (no cluster record), built once. */
  #fromOptions: EffectiveSettings | undefined;

  /** The cluster settings in force now. */
  settings(): EffectiveSettings {
    const tracker = this.#config?.tracker;
    if (tracker === undefined) {
      const o = this.#o.options;
      this.#fromOptions ??= {
        sessionTimeoutMs: o.sessionTimeoutMs,
        heartbeatIntervalMs: o.heartbeatIntervalMs,
        strategy: o.strategy,
        shards: o.shards,
        expiryMs: o.sessionTimeoutMs,
        fenceMs: o.sessionTimeoutMs,
      };
      return this.#fromOptions;
    }
    return tracker.effective(performance.now());
  }

  #context(group: string): GroupContext {
    const { client, keys, options, log, leadership, holds } = this.#o;
    return {
      group,
      options,
      settings: () => this.settings(),
      epoch: leadership.epoch,
      leaderStart: this.#startedAt,
      tasks: this.#dispatcher,
      ...(this.#o.health === undefined ? {} : { health: this.#o.health }),
      ...(this.#o.metrics === undefined ? {} : { metrics: this.#o.metrics }),
      keys,
      client,
      store: this.#store,
      keeper: this.#keeper,
      log,
      holds,
      now: () => performance.now(),
    };
  }

  // ---- SessionHost --------------------------------------------------------------------

  async hello(session: WorkerSession, hello: Hello): Promise<StreamStatus | undefined> {
    if (this.#closed || !this.#o.holds()) return notLeader();
    const group = this.#groups.get(hello.group) ?? (await this.#create(hello.group));
    const refusal = await group.join(session, hello);
    if (refusal === undefined) this.#sessions.add(session);
    return refusal;
  }

  heartbeat(session: WorkerSession, hb: Heartbeat, seq: bigint): void {
    // An ack from a leader whose lease may have expired would extend the worker's
    // self-fence past the point where a new leader may hand its shards away.
    if (this.#closed || !this.#o.holds()) {
      session.close(notLeader());
      return;
    }
    this.#groups.get(session.group)?.heartbeat(session, hb, seq);
  }

  release(session: WorkerSession, release: Release): void {
    this.#groups.get(session.group)?.release(session, release);
  }

  leave(session: WorkerSession, leave: Leave): void {
    this.#groups.get(session.group)?.leave(session, leave);
  }

  taskUpdate(session: WorkerSession, update: TaskUpdate): void {
    const g = this.#groups.get(session.group);
    // Only the live incarnation, once it may run, speaks for the tasks of its node.
    if (g === undefined || !g.isLive(session)) return;
    this.#dispatcher.update(session.group, session.nodeId, update);
  }

  commandAck(session: WorkerSession, ack: CommandAck): void {
    const g = this.#groups.get(session.group);
    if (g === undefined || !g.isLive(session)) return;
    this.#dispatcher.ack(session.group, session.nodeId, ack);
  }

  detached(session: WorkerSession): void {
    this.#sessions.delete(session);
    this.#groups.get(session.group)?.detached(session);
  }

  /**
   * Ends this leadership's work: timers stop, every stream closes with UNAVAILABLE and
   * `x-shard-leader` naming `successor` (empty when it is not known), and queued writes settle.
   */
  async close(successor = ""): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#tick);
    clearInterval(this.#sweep);
    this.#dispatcher.close();
    const st = notLeader(successor);
    for (const g of this.#groups.values()) g.close(st);
    for (const s of this.#sessions) s.close(st);
    this.#sessions.clear();
    await Promise.all([...this.#groups.values()].map((g) => g.drain()));
    await this.#config?.close();
    await this.#tasks.close().catch(() => undefined);
    await this.#taskStore.close().catch(() => undefined);
    this.#keeper.close();
  }
}

function notLeader(successor = ""): StreamStatus {
  const metadata = new Metadata();
  metadata.set("x-shard-leader", successor);
  return {
    code: status.UNAVAILABLE,
    details:
      successor === ""
        ? "this replica no longer leads; reconnect to the leader"
        : `this replica no longer leads; the leader is ${successor}`,
    metadata,
  };
}
