import { Metadata, type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { CoordinatorMessage } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import { Election, type Leadership, parseLeaderInfo } from "../leadership/election.js";
import { LeaderWatch } from "../leadership/leader-watch.js";
import { LeaseKeeper } from "../leadership/lease-keeper.js";
import type { GroupSnapshot } from "../membership/group.js";
import { Authorizer, type Identity } from "../server/authorizer.js";
import { ReplicaHealthService } from "../server/health-service.js";
import { addReflectionService } from "../server/reflection-service.js";
import { RefusalLog } from "../server/refusal-log.js";
import { type ShardServer, StatusError, startShardServer } from "../server/shard-server.js";
import { ReloadingServerCredentials, type TlsSummary } from "../server/tls-credentials.js";
import { UnaryLimiter } from "../server/unary-limiter.js";
import { type SessionHost, WorkerSession } from "../server/worker-session.js";
import { DataSourceRegistry, type SourceReadTotals } from "../sharding/data-source-registry.js";
import { putHeadersFrom, putShardData } from "../sharding/put-shard-data.js";
import { fetchShardData, getShardInfo } from "../sharding/shard-queries.js";
import { backoffDelayMs } from "../store/backoff.js";
import { createEtcdClient } from "../store/etcd-client.js";
import { classifyEtcdError, etcdRetryBackoff } from "../store/etcd-errors.js";
import { EtcdHealth, type EtcdHealthSnapshot } from "../store/etcd-health.js";
import { type EtcdSecurity, loadEtcdSecurity } from "../store/etcd-security.js";
import { type KeyLayout, keyLayout } from "../store/keys.js";
import { addTaskService } from "../tasks/task-grpc.js";
import type { TaskQueue } from "../tasks/task-queue.js";
import { Leader } from "./leader.js";
import { createMetrics, type Metrics } from "./metrics.js";
import type { ReplicaOptions } from "./replica-options.js";

/** The etcd credentials the replica's flags name (reads the files; throws `invalid_config`). */
export function etcdSecurityOf(options: ReplicaOptions): EtcdSecurity {
  return loadEtcdSecurity({
    caFile: options.etcdCaFile,
    certFile: options.etcdCertFile,
    keyFile: options.etcdKeyFile,
    user: options.etcdUser,
    passwordFile: options.etcdPasswordFile,
  });
}

/** `follower` until elected; `leader` while leading; `stopped` after close(). */
export type ReplicaRole = "starting" | "follower" | "leader" | "stopped";

/** A snapshot for the status endpoint and tests. */
export interface ReplicaStatus {
  readonly id: string;
  readonly role: ReplicaRole;
  readonly address: string;
  readonly leader: { readonly id: string; readonly address: string; readonly epoch: number } | null;
  /** The epoch of the leader this replica knows (its own while it leads); 0 when none is known. */
  readonly leaderEpoch: number;
  readonly etcdWrites: number;
  /** Whether this replica reaches etcd, and the last failure (with the next retry). */
  readonly etcd: EtcdHealthSnapshot;
  /** `live` while the leader view is read and watched; `retrying` while it is re-established. */
  readonly leaderWatch: "live" | "retrying";
  readonly groups: ReturnType<import("../membership/group.js").Group["snapshot"]>[];
  /**
   * How the gRPC listener is protected: the certificate served (no secret), and `insecure`
   * when plaintext was allowed beyond loopback with `--insecure`.
   */
  readonly security: {
    readonly tls: TlsSummary | null;
    readonly insecure: boolean;
    /** `--auth`: who may call. */
    readonly auth: ReplicaOptions["auth"];
    /** Whether etcd is reached over TLS (`--etcd-ca`) and as an etcd user (`--etcd-user`; never the password). */
    readonly etcd: { readonly tls: boolean; readonly user: string | null };
  };
}

/** What `/readyz` answers: ready, or not and why (one line). */
export interface ReplicaReadiness {
  readonly ready: boolean;
  readonly reason: string;
}

/**
 * One ResourceManager replica: serves ShardService, campaigns in the etcd election, and
 * while it leads runs a {@link Leader}. Followers refuse worker streams naming the leader.
 *
 * It does not wait for etcd to start: the gRPC port is bound at once (refusing worker
 * streams with the reason while etcd cannot be reached), and the leader watch and the
 * campaign retry with backoff, each failure logged once with its kind and the next retry
 * delay. `status().etcd` and `readiness()` say whether etcd answers.
 *
 * @example
 * ```ts
 * const replica = await Replica.start(resolveReplicaOptions({ listen: "127.0.0.1:50051" }), log);
 * process.on("SIGTERM", () => void replica.close());
 * ```
 */
export class Replica {
  readonly options: ReplicaOptions;
  readonly #log: Logger;
  readonly #client: Etcd3;
  readonly #keys: KeyLayout;
  readonly #metrics: Metrics;
  readonly #health: EtcdHealth;
  // Election leases whose revoke failed (see #revokeAbandoned), and what revokes them.
  readonly #unrevoked = new Set<string>();
  readonly #revoker: LeaseKeeper;
  readonly #stop = new AbortController();
  #role: ReplicaRole = "starting";
  #watch: LeaderWatch | undefined;
  #server: ShardServer | undefined;
  #leadership: Leadership | undefined;
  #leader: Leader | undefined;
  // Settles when this replica, just elected, has loaded its groups and serves (or failed to):
  // Hellos that arrive meanwhile wait for it instead of being refused (see #heartbeatStreamAs).
  #starting: Promise<void> | undefined;
  // On a graceful stop: the next leader's address, to name when our streams close.
  #successor: Promise<string> | undefined;
  #loop: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #writes = 0;
  /** Worker streams open on this replica (admitted or still saying Hello). */
  #streams = 0;
  #source: DataSourceRegistry | undefined;
  readonly #refusals: RefusalLog;
  readonly #unary: UnaryLimiter;
  /** `grpc.health.v1.Health` on the gRPC port, following role and etcd state. */
  readonly #grpcHealth = new ReplicaHealthService();
  #offEtcdState: (() => void) | undefined;
  /** When this replica last became leader (epoch ms). */
  #leaderSince = 0;
  #tls: ReloadingServerCredentials | undefined;
  #auth: Authorizer | undefined;
  readonly #etcdSecurity: EtcdSecurity;

  private constructor(options: ReplicaOptions, log: Logger, etcdSecurity: EtcdSecurity) {
    this.options = options;
    // Every line says the role and leader epoch of its moment: a log formatter reads them as
    // each line is written, so the components that outlive a role change (the leader
    // watch, the data sources, the server) never log a stale role.
    this.#log = log.child(
      {},
      {
        formatters: {
          log: (obj: object) => ({
            role: this.#leadership !== undefined ? "leader" : this.#role,
            leaderEpoch: this.#leadership?.epoch ?? this.#watch?.view.epoch ?? 0,
            ...obj,
          }),
        },
      },
    );
    this.#refusals = new RefusalLog(this.#log);
    this.#unary = new UnaryLimiter(options.unaryRatePerSecond, options.unaryRatePerNode, performance.now());
    this.#client = createEtcdClient(options.etcdEndpoints, etcdSecurity);
    this.#etcdSecurity = etcdSecurity;
    this.#keys = keyLayout(options.namespace);
    this.#metrics = createMetrics();
    this.#health = new EtcdHealth(options.etcdEndpoints, this.#log, this.#metrics);
    this.#revoker = new LeaseKeeper(this.#client, this.#log, () => undefined);
  }

  /**
   * Starts serving, watching the leader and campaigning; resolves once the gRPC port is
   * bound, without waiting for etcd (see the class comment).
   */
  static async start(options: ReplicaOptions, log: Logger): Promise<Replica> {
    const r = new Replica(options, log, etcdSecurityOf(options));
    if (options.insecure)
      log.warn({
        event: "insecure",
        msg: "--insecure: plaintext listeners may bind non-loopback addresses; anyone who reaches them can join groups, read shard data and submit tasks",
      });
    try {
      if (options.tlsCertFile !== "")
        r.#tls = ReloadingServerCredentials.create(
          {
            certFile: options.tlsCertFile,
            keyFile: options.tlsKeyFile,
            clientCaFile: options.tlsClientCaFile === "" ? undefined : options.tlsClientCaFile,
          },
          r.#log,
        );
      r.#watch = LeaderWatch.start({ client: r.#client, keys: r.#keys, log: r.#log, health: r.#health });
      // Each group's data source, by its config. The built-in etcd source has its own etcd
      // client: a page of oversized records must never trip the breaker or the receive limit
      // of the client the election runs on.
      const source = DataSourceRegistry.create({
        client: r.#client,
        keys: r.#keys,
        etcdEndpoints: options.etcdEndpoints,
        etcdSecurity: r.#etcdSecurity,
        log: r.#log,
      });
      r.#source = source;
      r.#auth = Authorizer.start({
        mode: options.auth,
        client: r.#client,
        tokensPrefix: r.#keys.authTokensPrefix,
        log: r.#log,
      });
      r.#server = await startShardServer(
        {
          heartbeatStream: (call) => r.#heartbeatStream(call),
          getShardInfo: async (req) => {
            r.#limit(req.group, req.nodeId);
            return getShardInfo(r.#client, r.#keys, req);
          },
          fetchShardData: async (req, signal, writePage) => {
            r.#limit(req.group, req.nodeId);
            await fetchShardData(r.#client, r.#keys, source, req, signal, writePage);
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
          credentials: r.#tls,
          auth: r.#auth,
          maxMessageBytes: options.maxMessageBytes,
          maxStreamsPerConnection: options.maxStreamsPerConnection,
          log: r.#log,
          // TaskService: the leader's tasks; a follower refuses naming the leader, as for streams.
          // Health and reflection beside them (see health-service.ts, reflection-service.ts).
          register: (server) => {
            addTaskService(
              server,
              () => {
                const leader = r.#leader;
                if (leader !== undefined) return { host: leader.tasks };
                return { leader: r.#leaderAddress() };
              },
              { signal: r.#stop.signal, log: r.#log, limits: options.tasks, auth: r.#auth },
            );
            r.#grpcHealth.addToServer(server);
            addReflectionService(server);
          },
        },
      );
    } catch (e) {
      await r.close();
      throw e;
    }
    r.#role = "follower";
    r.#offEtcdState = r.#health.onStateChange(() => r.#syncHealth());
    r.#syncHealth();
    r.#loop = Promise.all([r.#campaignLoop(), r.#probeLoop()]).then(() => undefined);
    return r;
  }

  /** This replica's id (`--id`). */
  get id(): string {
    return this.options.id;
  }

  get role(): ReplicaRole {
    return this.#role;
  }

  /** The gRPC listener's TLS credentials (the HTTP listener serves the same certificate). */
  get tlsCredentials(): ReloadingServerCredentials | undefined {
    return this.#tls;
  }

  /** The bound gRPC port (useful with port 0). */
  get port(): number {
    return this.#server?.port ?? 0;
  }

  /** The replica's metrics (the HTTP server exports their registry at `/metrics`). */
  get metrics(): Metrics {
    return this.#metrics;
  }

  /** What FetchShardData read from the data stores so far, by kind (see `DataSourceRegistry.readTotals`). */
  dataReadTotals(): { etcd: SourceReadTotals; postgres: SourceReadTotals } {
    return this.#source?.readTotals() ?? { etcd: { rows: 0, bytes: 0 }, postgres: { rows: 0, bytes: 0 } };
  }

  /** The replica's view of its etcd connection. */
  get etcdHealth(): EtcdHealth {
    return this.#health;
  }

  /**
   * Ready means: etcd answers, and this replica knows the current leader (it leads, or its
   * leader watch is live). Otherwise the reason, in one line.
   */
  readiness(): ReplicaReadiness {
    if (this.#role === "stopped" || this.#role === "starting") return { ready: false, reason: this.#role };
    const etcd = this.#health.notReadyReason();
    if (etcd !== undefined) return { ready: false, reason: etcd };
    if (this.#role !== "leader" && this.#watch?.live !== true)
      return { ready: false, reason: "leader watch is being re-established" };
    return { ready: true, reason: this.#role };
  }

  status(): ReplicaStatus {
    const view = this.#watch?.view;
    return {
      id: this.options.id,
      role: this.#role,
      address: this.options.advertise,
      leader:
        view?.info === undefined ? null : { id: view.info.id, address: view.info.address, epoch: view.epoch },
      leaderEpoch: this.#leadership?.epoch ?? view?.epoch ?? 0,
      etcdWrites: this.#writes + (this.#leader?.store.writes ?? 0),
      etcd: this.#health.snapshot(),
      leaderWatch: this.#watch?.live === true ? "live" : "retrying",
      groups: this.#leader === undefined ? [] : [...this.#leader.groups.values()].map((g) => g.snapshot()),
      security: {
        tls: this.#tls?.summary ?? null,
        insecure: this.options.insecure,
        auth: this.options.auth,
        etcd: {
          tls: this.options.etcdCaFile !== "",
          user: this.options.etcdUser === "" ? null : this.options.etcdUser,
        },
      },
    };
  }

  /**
   * The address of this replica's HTTP listener as others reach it (the wildcard host of
   * `--http-listen` replaced by the advertised gRPC host), written in its election value so
   * that followers' consoles find the leader's feed. Empty when HTTP is off.
   */
  get httpAdvertise(): string {
    const listen = this.options.httpListen;
    if (listen === "") return "";
    const i = listen.lastIndexOf(":");
    const host = listen.slice(0, i);
    if (host !== "0.0.0.0" && host !== "[::]" && host !== "::" && host !== "") return listen;
    const a = this.options.advertise;
    return `${a.slice(0, a.lastIndexOf(":"))}:${listen.slice(i + 1)}`;
  }

  #httpInfo(): { http?: string; httpTls?: boolean } {
    const http = this.httpAdvertise;
    if (http === "") return {};
    // The HTTP listener serves HTTPS with the gRPC certificate whenever there is one.
    return this.options.tlsCertFile === "" ? { http } : { http, httpTls: true };
  }

  /** The leader as this replica's watch sees it (with its console address), or undefined. */
  knownLeader():
    | {
        readonly id: string;
        readonly address: string;
        readonly http: string | null;
        readonly httpTls: boolean;
        readonly epoch: number;
      }
    | undefined {
    const view = this.#watch?.view;
    if (view?.info === undefined) return undefined;
    return {
      id: view.info.id,
      address: view.info.address,
      http: view.info.http ?? null,
      httpTls: view.info.httpTls === true,
      epoch: view.epoch,
    };
  }

  /**
   * What the console needs from the leader's memory, or undefined while this replica does
   * not lead: its epoch and since when, each group's snapshot and its loaded task queue.
   */
  leaderState():
    | {
        readonly epoch: number;
        readonly since: number;
        readonly groups: readonly {
          readonly snapshot: GroupSnapshot;
          readonly tasks: Pick<TaskQueue, "counts" | "latestFailures"> | undefined;
        }[];
      }
    | undefined {
    const leader = this.#leader;
    const leadership = this.#leadership;
    if (leader === undefined || leadership === undefined || this.#role !== "leader") return undefined;
    return {
      epoch: leadership.epoch,
      since: this.#leaderSince,
      groups: [...leader.groups.values()].map((g) => ({
        snapshot: g.snapshot(),
        tasks: leader.tasks.loaded(g.name),
      })),
    };
  }

  /**
   * Every replica campaigning, from the election prefix (one etcd range read): the lowest
   * create revision leads. Values that are not ours are skipped.
   */
  async candidates(): Promise<{ id: string; address: string; http: string | null; revision: number }[]> {
    const res = await this.#health.call("console_candidates", () =>
      this.#client.getAll().prefix(this.#keys.electionPrefix).sort("Create", "Ascend").exec(),
    );
    const out: { id: string; address: string; http: string | null; revision: number }[] = [];
    for (const kv of res.kvs) {
      const info = parseLeaderInfo(kv.value.toString());
      if (info !== undefined)
        out.push({
          id: info.id,
          address: info.address,
          http: info.http ?? null,
          revision: Number(kv.create_revision),
        });
    }
    return out;
  }

  /** The gRPC health statuses now reported, by service (`""`: the replica as a whole). */
  get grpcHealth(): Readonly<Record<string, string>> {
    return this.#grpcHealth.statuses;
  }

  /** Tells the gRPC health service the current role and etcd state. */
  #syncHealth(): void {
    // Once close() has begun the replica serves nothing, whatever its loops still do.
    const role = this.#stop.signal.aborted ? "stopped" : this.#role;
    this.#grpcHealth.update({ role, etcdConnected: this.#health.state === "connected" });
  }

  /**
   * The address of the next leader once the election shows one other than us (right after our
   * resign the next candidate's key is the lowest), or "" after `withinMs`.
   */
  #awaitSuccessor(withinMs: number): Promise<string> {
    const watch = this.#watch;
    if (watch === undefined) return Promise.resolve("");
    return new Promise<string>((resolve) => {
      const other = () => {
        const info = watch.view.info;
        return info !== undefined && info.id !== this.options.id ? info.address : undefined;
      };
      let off = (): void => undefined;
      const timer = setTimeout(() => {
        off();
        resolve("");
      }, withinMs);
      off = watch.onChange(() => {
        const a = other();
        if (a === undefined) return;
        clearTimeout(timer);
        off();
        resolve(a);
      });
      // Checked after subscribing: a change between the two would otherwise be missed.
      const now = other();
      if (now !== undefined) {
        clearTimeout(timer);
        off();
        resolve(now);
      }
    });
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

  #heartbeatStream(call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>): void {
    const auth = this.#auth;
    if (auth === undefined || auth.mode === "none") {
      this.#heartbeatStreamAs(call, undefined);
      return;
    }
    // Credentials first: an unauthenticated caller learns nothing, not even who leads.
    auth.authenticate(call).then(
      (identity) => this.#heartbeatStreamAs(call, identity),
      (e: unknown) => {
        const st = e instanceof StatusError ? e : new StatusError(status.INTERNAL, String(e));
        this.#metrics.streamRefused(status[st.code]);
        this.#refusals.refused(
          { event: "stream_refused", peer: call.getPeer(), code: status[st.code], details: st.message },
          performance.now(),
        );
        call.emit("error", { code: st.code, details: st.message, metadata: new Metadata() });
      },
    );
  }

  /**
   * The host a session of `identity` talks to: the leader, behind a check of the Hello's
   * group and node id, and a hook that ends the stream when the identity's token is revoked.
   */
  #guardedHost(leader: Leader, identity: Identity | undefined): { host: SessionHost; forget: () => void } {
    const auth = this.#auth;
    if (identity === undefined || auth === undefined) return { host: leader, forget: () => undefined };
    let forget = (): void => undefined;
    const host: SessionHost = {
      hello: async (session, hello) => {
        try {
          auth.authorize(identity, hello.group, "worker", hello.nodeId);
        } catch (e) {
          const st = e as StatusError;
          return { code: st.code, details: st.message };
        }
        forget = auth.onRevoked(identity, () =>
          session.close({ code: status.UNAUTHENTICATED, details: "token revoked" }),
        );
        return leader.hello(session, hello);
      },
      heartbeat: (s, hb, seq) => leader.heartbeat(s, hb, seq),
      release: (s, m) => leader.release(s, m),
      leave: (s, m) => leader.leave(s, m),
      taskUpdate: (s, m) => leader.taskUpdate(s, m),
      commandAck: (s, m) => leader.commandAck(s, m),
      detached: (s) => leader.detached(s),
    };
    return { host, forget: () => forget() };
  }

  #heartbeatStreamAs(
    call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>,
    identity: Identity | undefined,
    waited = false,
  ): void {
    const leader = this.#leader;
    const starting = this.#starting;
    if (leader === undefined && starting !== undefined && !waited) {
      // Just elected and loading: hold the stream (its Hello stays buffered) until we serve,
      // at most a few seconds; then it is served or refused as usual.
      const bound = new Promise<void>((r) => setTimeout(r, 3000).unref());
      void Promise.race([starting, bound]).then(() => {
        if (!call.cancelled) this.#heartbeatStreamAs(call, identity, true);
      });
      return;
    }
    if (leader === undefined) {
      const info = this.#watch?.view.info;
      const etcdDown = this.#health.notReadyReason();
      // Never name ourselves while we are not serving as leader (we may be between terms),
      // nor a leader we cannot currently confirm (our etcd view is not live).
      const address =
        info !== undefined && info.id !== this.options.id && this.#watch?.live === true ? info.address : "";
      const metadata = new Metadata();
      metadata.set("x-shard-leader", address);
      this.#metrics.streamRefused("UNAVAILABLE");
      call.emit("error", {
        code: status.UNAVAILABLE,
        details:
          etcdDown !== undefined
            ? `not the leader: this replica cannot serve until it reaches etcd (${etcdDown})`
            : address === ""
              ? "not the leader, and no leader is known yet"
              : `not the leader; the leader is ${address}`,
        metadata,
      });
      return;
    }
    if (this.#streams >= this.options.maxStreams) {
      this.#metrics.streamRefused("RESOURCE_EXHAUSTED");
      call.emit("error", {
        code: status.RESOURCE_EXHAUSTED,
        details: `this replica holds its maximum of ${this.options.maxStreams} worker streams`,
        metadata: new Metadata(),
      });
      return;
    }
    this.#streams += 1;
    const guarded = this.#guardedHost(leader, identity);
    new WorkerSession(
      call,
      guarded.host,
      this.#log,
      {
        maxQueued: 256,
        helloTimeoutMs: this.options.helloTimeoutMs,
        heartbeatBurst: 20,
        heartbeatsPerSecond: Math.max(10, 5000 / this.options.heartbeatIntervalMs),
      },
      {
        refusals: this.#refusals,
        onRefused: (code) => this.#metrics.streamRefused(code),
        onEnd: () => {
          this.#streams -= 1;
          guarded.forget();
        },
      },
    ).start();
  }

  /**
   * Campaigns, leads, and campaigns again, until close(). A failed campaign (etcd
   * unreachable, a leader that could not start) is retried after a backoff chosen by the
   * failure's kind (1 s growing to 5 s while etcd is unreachable; 2 s to 10 s for NOSPACE or
   * auth), with one `campaign_failed` line each; a term that ended normally is followed by
   * a new campaign after 250 ms.
   */
  async #campaignLoop(): Promise<void> {
    const signal = this.#stop.signal;
    let attempt = 0;
    while (!signal.aborted) {
      const election = new Election({
        client: this.#client,
        keys: this.#keys,
        log: this.#log,
        self: { id: this.options.id, address: this.options.advertise, ...this.#httpInfo() },
        ttlSec: this.options.leaderTtlSec,
        health: this.#health,
        onKeepAlive: (seconds) => this.#metrics.leaseKeepAlive("election", seconds),
        onRevokeFailed: (leaseId) => {
          // Bounded: each is revoked (or found gone) at the first probe etcd answers.
          if (this.#unrevoked.size < 64) this.#unrevoked.add(leaseId);
        },
      });
      const started = performance.now();
      let pause = 250;
      try {
        const leadership = await election.campaign(signal);
        attempt = 0;
        this.#leadership = leadership;
        // Logged here, not by the election, so the line already says role leader and the
        // new epoch (the role of its moment: this replica holds the leadership from now).
        this.#log.info({ event: "elected", epoch: leadership.epoch, key: leadership.key });
        await this.#lead(leadership);
      } catch (e) {
        if (signal.aborted) break;
        // A campaign that ran for a while (a follower whose lease lapsed) is a fresh failure.
        if (performance.now() - started > 5000) attempt = 0;
        pause = backoffDelayMs(attempt, etcdRetryBackoff(classifyEtcdError(e)));
        attempt += 1;
        this.#health.failed("campaign", e, pause, { event: "campaign_failed", attempt });
      } finally {
        await election.close();
      }
      // Woken early when etcd answers again (the probe or the leader watch saw it).
      await this.#health.sleep(pause, signal);
    }
  }

  /**
   * While etcd is not answering, asks it twice a second whether it is back: a linearizable
   * read of one key (it needs etcd's quorum, as everything the replica does). Probes start
   * every 500 ms whether or not the previous one has answered (at most 4 in flight), since
   * one sent to a member without quorum only fails at its 2 s deadline. The first answer
   * wakes the retry loops sleeping in their backoff, so a replica finds a recovered etcd
   * within about half a second while its log still says each failure once per retry (up to
   * every 5 s). The probes' failures are counted (`shard_etcd_errors_total{op="probe"}`),
   * not logged: the retry loops already say it. Once etcd answers, it also revokes the
   * election leases a resign could not revoke.
   */
  async #probeLoop(): Promise<void> {
    const signal = this.#stop.signal;
    const key = this.#keys.electionPrefix;
    const inFlight = new Set<Promise<unknown>>();
    while (!signal.aborted) {
      if (this.#health.state !== "connected" && inFlight.size < 4) {
        const probe: Promise<unknown> = this.#health
          .call("probe", () => this.#client.get(key).exec())
          .catch(() => undefined)
          .finally(() => inFlight.delete(probe));
        inFlight.add(probe);
      }
      if (this.#health.state === "connected" && this.#unrevoked.size > 0) await this.#revokeAbandoned();
      await this.#health.sleep(500, signal);
    }
    // A closed etcd3 client does not cancel calls in flight; let them end (each within its
    // 2 s deadline) so that no timer outlives close().
    await Promise.all(inFlight);
  }

  /**
   * Revokes the election leases whose resign could not reach etcd: their keys would
   * otherwise keep the next candidate waiting for a TTL after etcd comes back.
   */
  async #revokeAbandoned(): Promise<void> {
    for (const leaseId of [...this.#unrevoked]) {
      try {
        await this.#health.call("lease_revoke", () => this.#revoker.revoke(leaseId));
        this.#unrevoked.delete(leaseId);
        this.#log.info({ event: "abandoned_lease_revoked", leaseId });
      } catch (e) {
        this.#health.failed("lease_revoke", e, 1000, { leaseId });
        return;
      }
    }
  }

  async #lead(leadership: Leadership): Promise<void> {
    const fence = () => leadership.holds();
    const deposed = (e: CoordinatorError) => {
      this.#log.warn({ event: "deposed", err: e.message });
      void leadership.resign();
    };
    this.#successor = undefined;
    let leader: Leader | undefined;
    const starting = Promise.withResolvers<void>();
    this.#starting = starting.promise;
    try {
      leader = await Leader.start({
        client: this.#client,
        keys: this.#keys,
        options: this.options,
        leadership,
        log: this.#log,
        holds: fence,
        onDeposed: deposed,
        health: this.#health,
        metrics: this.#metrics,
      });
      if (leadership.signal.aborted) throw leadership.signal.reason;
      // close() may have run while we were being elected: it found no leadership to resign.
      if (this.#stop.signal.aborted) throw new CoordinatorError("closed", "replica stopping");
      this.#leader = leader;
      this.#role = "leader";
      this.#leaderSince = Date.now();
      this.#metrics.elected();
      this.#syncHealth();
      this.#log.info({ event: "leading" });
      this.#starting = undefined;
      starting.resolve();
      await new Promise<void>((resolve) => {
        if (leadership.signal.aborted) resolve();
        leadership.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      // Giving it up on purpose (a graceful stop, a step-down) is not a warning.
      if (this.#stop.signal.aborted || this.#successor !== undefined)
        this.#log.info({ event: "leadership_resigned" });
      else this.#log.warn({ event: "leadership_lost", reason: String(leadership.signal.reason) });
    } finally {
      this.#starting = undefined;
      starting.resolve();
      this.#leader = undefined;
      if (this.#role === "leader") this.#role = "follower";
      this.#syncHealth();
      if (leader !== undefined) {
        this.#writes += leader.store.writes;
        // A graceful stop names the next leader as the streams close, so workers go straight
        // to it instead of trying replicas at random (it holds their Hellos until it serves).
        await leader.close((await this.#successor) ?? "");
      }
      await leadership.resign();
      this.#leadership = undefined;
    }
  }

  /**
   * Gives up leadership gracefully while this replica keeps running (`coordinator leader
   * step-down`): it resigns, its streams close naming the next leader, and it campaigns again
   * behind the candidates already waiting (with none, it leads again). Resolves with the
   * next leader's address ("" when none showed within a second).
   */
  async stepDown(): Promise<string> {
    const leadership = this.#leadership;
    if (this.#role !== "leader" || leadership === undefined)
      throw new CoordinatorError("not_leader", "this replica does not lead");
    this.#log.info({ event: "stepping_down" });
    const successor = this.#awaitSuccessor(1000);
    this.#successor = successor;
    await leadership.resign();
    return successor;
  }

  /**
   * Graceful stop: a leader resigns at once (so the next replica leads without waiting for
   * the TTL), every stream is closed, the server stops, etcd is closed. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort(new CoordinatorError("closed", "replica stopping"));
      // Health watchers (load balancers) hear NOT_SERVING before the port closes.
      this.#offEtcdState?.();
      this.#syncHealth();
      const leadership = this.#leadership;
      if (leadership !== undefined) {
        this.#successor = this.#awaitSuccessor(1000);
        await leadership.resign();
      }
      await this.#loop?.catch(() => undefined);
      await this.#server?.close();
      this.#tls?.close();
      await this.#auth?.close();
      await this.#watch?.close();
      await this.#source?.close();
      this.#revoker.close();
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
