import { Metadata, status } from "@grpc/grpc-js";
import type { Heartbeat, Hello, Leave, Release } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import type { CoordinatorError } from "../errors.js";
import type { Leadership } from "../leadership/election.js";
import { FencedStore } from "../leadership/fenced-store.js";
import { LeaseKeeper } from "../leadership/lease-keeper.js";
import { Group, type GroupContext } from "../membership/group.js";
import type { SessionHost, StreamStatus, WorkerSession } from "../server/worker-session.js";
import type { KeyLayout } from "../store/keys.js";
import type { ReplicaOptions } from "./replica-options.js";

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
}

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
  #tick: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(o: LeaderOptions) {
    this.#o = o;
    this.#store = new FencedStore(o.client, o.leadership.key, o.leadership.epoch, o.holds, o.onDeposed);
    this.#keeper = new LeaseKeeper(o.client, o.log, (ack) => {
      if (ack.ttlSec <= 0) for (const g of this.#groups.values()) g.leaseGone(ack.leaseId);
    });
  }

  /** Loads every group from etcd and starts the periodic sweep. */
  static async start(o: LeaderOptions): Promise<Leader> {
    const leader = new Leader(o);
    try {
      await leader.#load();
    } catch (e) {
      // Loaded groups already hold timers and a keep-alive stream.
      await leader.close();
      throw e;
    }
    // Expiry needs no finer grain than this: each tick scans every member of every group.
    const everyMs = Math.max(100, Math.min(250, o.options.heartbeatIntervalMs / 4));
    leader.#tick = setInterval(() => {
      for (const g of leader.#groups.values()) g.tick();
    }, everyMs);
    o.log.info({ event: "leader_started", leaderEpoch: o.leadership.epoch, groups: leader.#groups.size });
    return leader;
  }

  async #load(): Promise<void> {
    const o = this.#o;
    const names = new Set<string>();
    const keys = await o.client.getAll().prefix(o.keys.groupsPrefix).keys();
    for (const key of keys) {
      const parsed = o.keys.parseGroupKey(key);
      if (parsed !== undefined && (parsed.rest === "assignment" || parsed.rest.startsWith("members/")))
        names.add(parsed.group);
    }
    for (const name of names) this.#groups.set(name, await Group.load(this.#context(name)));
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

  #context(group: string): GroupContext {
    const { client, keys, options, log, leadership } = this.#o;
    return {
      group,
      options,
      epoch: leadership.epoch,
      keys,
      client,
      store: this.#store,
      keeper: this.#keeper,
      log,
      now: () => performance.now(),
    };
  }

  // ---- SessionHost --------------------------------------------------------------------

  async hello(session: WorkerSession, hello: Hello): Promise<StreamStatus | undefined> {
    if (this.#closed || !this.#o.holds()) return notLeader();
    let group = this.#groups.get(hello.group);
    if (group === undefined) {
      group = Group.empty(this.#context(hello.group));
      this.#groups.set(hello.group, group);
    }
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

  leave(session: WorkerSession, _leave: Leave): void {
    this.#groups.get(session.group)?.leave(session);
  }

  detached(session: WorkerSession): void {
    this.#sessions.delete(session);
    this.#groups.get(session.group)?.detached(session);
  }

  /**
   * Ends this leadership's work: timers stop, every stream closes with UNAVAILABLE and an
   * empty `x-shard-leader` (we cannot name the next leader yet), and queued writes settle.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#tick);
    const st = notLeader();
    for (const g of this.#groups.values()) g.close(st);
    for (const s of this.#sessions) s.close(st);
    this.#sessions.clear();
    await Promise.all([...this.#groups.values()].map((g) => g.drain()));
    this.#keeper.close();
  }
}

function notLeader(): StreamStatus {
  const metadata = new Metadata();
  metadata.set("x-shard-leader", "");
  return {
    code: status.UNAVAILABLE,
    details: "this replica no longer leads; reconnect to the leader",
    metadata,
  };
}
