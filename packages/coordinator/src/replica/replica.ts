import { Metadata, type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { CoordinatorMessage } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import { Election, type Leadership } from "../leadership/election.js";
import { LeaderWatch } from "../leadership/leader-watch.js";
import { RefusalLog } from "../server/refusal-log.js";
import { type ShardServer, StatusError, startShardServer } from "../server/shard-server.js";
import { UnaryLimiter } from "../server/unary-limiter.js";
import { WorkerSession } from "../server/worker-session.js";
import { DataSourceRegistry } from "../sharding/data-source-registry.js";
import { putHeadersFrom, putShardData } from "../sharding/put-shard-data.js";
import { fetchShardData, getShardInfo } from "../sharding/shard-queries.js";
import { createEtcdClient } from "../store/etcd-client.js";
import { type KeyLayout, keyLayout } from "../store/keys.js";
import { addTaskService } from "../tasks/task-grpc.js";
import { Leader } from "./leader.js";
import type { ReplicaOptions } from "./replica-options.js";

/** `follower` until elected; `leader` while leading; `stopped` after close(). */
export type ReplicaRole = "starting" | "follower" | "leader" | "stopped";

/** A snapshot for the status endpoint and tests. */
export interface ReplicaStatus {
  readonly id: string;
  readonly role: ReplicaRole;
  readonly address: string;
  readonly leader: { readonly id: string; readonly address: string; readonly epoch: number } | null;
  readonly leaderEpoch: number;
  readonly etcdWrites: number;
  readonly groups: ReturnType<import("../membership/group.js").Group["snapshot"]>[];
}

/**
 * One ResourceManager replica: serves ShardService, campaigns in the etcd election, and
 * while it leads runs a {@link Leader}. Followers refuse worker streams naming the leader.
 *
 * @example
 * ```ts
 * const replica = await Replica.start(resolveReplicaOptions({ listen: "127.0.0.1:50051" }), log);
 * process.on("SIGTERM", () => void replica.close());
 * ```
 */
export class Replica {
  readonly options: ReplicaOptions;
  readonly #baseLog: Logger;
  #log: Logger;
  readonly #client: Etcd3;
  readonly #keys: KeyLayout;
  readonly #stop = new AbortController();
  #role: ReplicaRole = "starting";
  #watch: LeaderWatch | undefined;
  #server: ShardServer | undefined;
  #leadership: Leadership | undefined;
  #leader: Leader | undefined;
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #writes = 0;
  /** Worker streams open on this replica (admitted or still saying Hello). */
  #streams = 0;
  #source: DataSourceRegistry | undefined;
  readonly #refusals: RefusalLog;
  readonly #unary: UnaryLimiter;

  private constructor(options: ReplicaOptions, log: Logger) {
    this.options = options;
    this.#baseLog = log;
    this.#log = log.child({ role: "follower", leaderEpoch: 0 });
    this.#refusals = new RefusalLog(log);
    this.#unary = new UnaryLimiter(options.unaryRatePerSecond, options.unaryRatePerNode, performance.now());
    this.#client = createEtcdClient(options.etcdEndpoints);
    this.#keys = keyLayout(options.namespace);
  }

  /** Connects to etcd, starts serving and campaigning; resolves once the gRPC port is bound. */
  static async start(options: ReplicaOptions, log: Logger): Promise<Replica> {
    const r = new Replica(options, log);
    try {
      r.#watch = await LeaderWatch.start(r.#client, r.#keys, r.#log);
      // Each group's data source, by its config. The built-in etcd source has its own etcd
      // client: a page of oversized records must never trip the breaker or the receive limit
      // of the client the election runs on.
      const source = DataSourceRegistry.create({
        client: r.#client,
        keys: r.#keys,
        etcdEndpoints: options.etcdEndpoints,
        log: r.#log,
      });
      r.#source = source;
      r.#server = await startShardServer(
        {
          heartbeatStream: (call) => r.#heartbeatStream(call),
          getShardInfo: async (req) => {
            r.#limit(req.group, req.nodeId);
            return getShardInfo(r.#client, r.#keys, req);
          },
          fetchShardData: async (req, signal, write) => {
            r.#limit(req.group, req.nodeId);
            await fetchShardData(r.#client, r.#keys, source, req, signal, write);
          },
          putShardData: (metadata, records, signal) => {
            const first = (key: string) => {
              const v = metadata.get(key)[0];
              return v === undefined ? undefined : String(v);
            };
            return putShardData(source, putHeadersFrom(first), records, signal);
          },
        },
        {
          listen: options.listen,
          maxMessageBytes: options.maxMessageBytes,
          maxStreamsPerConnection: options.maxStreamsPerConnection,
          log: r.#log,
          // TaskService: the leader's tasks; a follower refuses naming the leader, as for streams.
          register: (server) =>
            addTaskService(
              server,
              () => {
                const leader = r.#leader;
                if (leader !== undefined) return { host: leader.tasks };
                return { leader: r.#leaderAddress() };
              },
              { signal: r.#stop.signal, log: r.#log, limits: options.tasks },
            ),
        },
      );
    } catch (e) {
      await r.close();
      throw e;
    }
    r.#role = "follower";
    r.#loop = r.#campaignLoop();
    return r;
  }

  get role(): ReplicaRole {
    return this.#role;
  }

  /** The bound gRPC port (useful with port 0). */
  get port(): number {
    return this.#server?.port ?? 0;
  }

  status(): ReplicaStatus {
    const view = this.#watch?.view;
    return {
      id: this.options.id,
      role: this.#role,
      address: this.options.advertise,
      leader:
        view?.info === undefined ? null : { id: view.info.id, address: view.info.address, epoch: view.epoch },
      leaderEpoch: this.#leadership?.epoch ?? 0,
      etcdWrites: this.#writes + (this.#leader?.store.writes ?? 0),
      groups: this.#leader === undefined ? [] : [...this.#leader.groups.values()].map((g) => g.snapshot()),
    };
  }

  /** The leader's address to name in a refusal; never ourselves (we may be between terms). */
  #leaderAddress(): string {
    const info = this.#watch?.view.info;
    return info !== undefined && info.id !== this.options.id ? info.address : "";
  }

  /** Throws RESOURCE_EXHAUSTED when a unary call is over its rate. */
  #limit(group: string, nodeId: string): void {
    const over = this.#unary.take(group, nodeId, performance.now());
    if (over !== undefined) throw new StatusError(status.RESOURCE_EXHAUSTED, over);
  }

  #heartbeatStream(call: ServerDuplexStream<Buffer, CoordinatorMessage>): void {
    const leader = this.#leader;
    if (leader === undefined) {
      const info = this.#watch?.view.info;
      // Never name ourselves while we are not serving as leader (we may be between terms).
      const address = info !== undefined && info.id !== this.options.id ? info.address : "";
      const metadata = new Metadata();
      metadata.set("x-shard-leader", address);
      call.emit("error", {
        code: status.UNAVAILABLE,
        details:
          address === ""
            ? "not the leader, and no leader is known yet"
            : `not the leader; the leader is ${address}`,
        metadata,
      });
      return;
    }
    if (this.#streams >= this.options.maxStreams) {
      call.emit("error", {
        code: status.RESOURCE_EXHAUSTED,
        details: `this replica holds its maximum of ${this.options.maxStreams} worker streams`,
        metadata: new Metadata(),
      });
      return;
    }
    this.#streams += 1;
    new WorkerSession(
      call,
      leader,
      this.#log,
      {
        maxQueued: 256,
        helloTimeoutMs: this.options.helloTimeoutMs,
        heartbeatBurst: 20,
        heartbeatsPerSecond: Math.max(10, 5000 / this.options.heartbeatIntervalMs),
      },
      { refusals: this.#refusals, onEnd: () => (this.#streams -= 1) },
    ).start();
  }

  async #campaignLoop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      const election = new Election({
        client: this.#client,
        keys: this.#keys,
        log: this.#log,
        self: { id: this.options.id, address: this.options.advertise },
        ttlSec: this.options.leaderTtlSec,
      });
      try {
        const leadership = await election.campaign(signal);
        this.#leadership = leadership;
        await this.#lead(leadership);
      } catch (e) {
        if (!signal.aborted) this.#log.warn({ event: "campaign_failed", err: String(e) });
      } finally {
        election.close();
      }
      if (!signal.aborted) await sleep(250, signal);
    }
  }

  async #lead(leadership: Leadership): Promise<void> {
    const fence = () => leadership.holds();
    const deposed = (e: CoordinatorError) => {
      this.#log.warn({ event: "deposed", err: e.message });
      void leadership.resign();
    };
    this.#log = this.#baseLog.child({ role: "leader", leaderEpoch: leadership.epoch });
    let leader: Leader | undefined;
    try {
      leader = await Leader.start({
        client: this.#client,
        keys: this.#keys,
        options: this.options,
        leadership,
        log: this.#log,
        holds: fence,
        onDeposed: deposed,
      });
      if (leadership.signal.aborted) throw leadership.signal.reason;
      // close() may have run while we were being elected: it found no leadership to resign.
      if (this.#stop.signal.aborted) throw new CoordinatorError("closed", "replica stopping");
      this.#leader = leader;
      this.#role = "leader";
      this.#log.info({ event: "leading", leaderEpoch: leadership.epoch });
      await new Promise<void>((resolve) => {
        if (leadership.signal.aborted) resolve();
        leadership.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      this.#log.warn({ event: "leadership_lost", reason: String(leadership.signal.reason) });
    } finally {
      this.#leader = undefined;
      if (this.#role === "leader") this.#role = "follower";
      if (leader !== undefined) {
        this.#writes += leader.store.writes;
        await leader.close();
      }
      await leadership.resign();
      this.#leadership = undefined;
      this.#log = this.#baseLog.child({ role: "follower", leaderEpoch: 0 });
    }
  }

  /**
   * Graceful stop: a leader resigns at once (so the next replica leads without waiting for
   * the TTL), every stream is closed, the server stops, etcd is closed. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort(new CoordinatorError("closed", "replica stopping"));
      const leadership = this.#leadership;
      if (leadership !== undefined) await leadership.resign();
      await this.#loop?.catch(() => undefined);
      await this.#server?.close();
      await this.#watch?.close();
      await this.#source?.close();
      this.#client.close();
      this.#role = "stopped";
      this.#log.info({ event: "replica_stopped" });
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
