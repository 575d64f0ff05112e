import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type AssignmentRecord,
  keyLayout,
  loadShardData,
  newToken,
  PostgresDataSource,
  type PostgresSourceConfig,
  parseDataSourceConfig,
  sequentialRecords,
} from "@org/coordinator";
import { Etcd3, type Watcher } from "etcd3";
import { HarnessConfigError } from "../harness/errors.js";
import { type EtcdCluster, startEtcdCluster } from "../harness/etcd-cluster.js";
import { type PostgresServer, startPostgres } from "../harness/postgres-server.js";
import type { ProcessHost } from "../harness/process-host.js";
import { startTcpProxy, type TcpProxy } from "../harness/tcp-proxy.js";
import { type NetHost, VirtualNetwork } from "../harness/virtual-network.js";
import { coordinatorArgs, readAssignment } from "../support/coordinator-state.js";
import { JobProcess } from "../support/job-process.js";
import { RmCluster } from "../support/rm-cluster.js";
import type { EtcdEvent, WorkerEvent } from "./timeline.js";

/** Coordinator timing used by every drill: the defaults' ratios, scaled down to keep drills short. */
export const drillTiming = {
  leaderTtlSec: 2,
  heartbeatIntervalMs: 500,
  sessionTimeoutMs: 4000,
  memberLeaseTtlSec: 8,
  rebalanceDelayMs: 500,
} as const;

export interface DrillEnvironmentOptions {
  readonly workers: number;
  readonly items: number;
  readonly itemMs: number;
  /** Put replica rm-1 behind a TCP proxy to etcd, so a drill can cut it off alone. */
  readonly proxyFirstReplica?: boolean;
  /**
   * `loopback` (the default): every process on this machine's 127.0.0.1. `netns`: every etcd
   * member, replica and worker on a host of its own in a {@link VirtualNetwork}, so a drill
   * can cut any link between two of them ({@link DrillEnvironment.net}).
   */
  readonly network?: "loopback" | "netns";
  /** Hosts made ready for workers started after the first `workers` (netns only); default 4. */
  readonly spareWorkerHosts?: number;
  /** Extra flags for replica i (0-based), after the drill's timing flags. */
  readonly replicaArgs?: (index: number) => readonly string[];
  /**
   * Where the dataset lives: the built-in etcd source (the default), or a PostgreSQL server
   * started for the drill ({@link DrillEnvironment.postgres}, loopback only), named in the
   * group's config with the password in a file.
   */
  readonly dataSource?: "etcd" | "postgres";
  /**
   * `tokens`: replicas run with `--auth tokens`, and every worker with a `worker` token of the
   * drill's group ({@link DrillEnvironment.workerToken}), made before the replicas start.
   */
  readonly auth?: "tokens";
}

/** What {@link DrillEnvironment.crashLoop} did. */
export interface CrashLoopResult {
  /** Processes started (and SIGKILLed). */
  readonly starts: number;
  /** How many of them got as far as joining the group before they were killed. */
  readonly joins: number;
  /** When the loop started and when its last process was killed (ms since the epoch). */
  readonly startedAt: number;
  readonly endedAt: number;
}

/**
 * Everything a drill runs against: a 3-member etcd, 3 replica processes, N worker processes
 * (the example dataset job, with an etcd checkpoint), the dataset, and a recorder of every
 * etcd write under the namespace with its revision.
 *
 * In `netns` mode every etcd member (hosts etcd0..2), replica (rm1..3) and worker (w1..,
 * one per node id, kept across its restarts) runs on a host of its own in {@link net}; the
 * recorder and the status polls run here, as the network's observer, which no cut touches.
 * `stop()` deletes every namespace it created.
 */
export class DrillEnvironment {
  /** The virtual network in `netns` mode: cut and heal links between the hosts below. */
  readonly net: VirtualNetwork | undefined;
  /** Host of etcd member i (netns mode). */
  readonly etcdHosts: readonly NetHost[];
  readonly etcd: EtcdCluster;
  readonly rm: RmCluster;
  readonly client: Etcd3;
  readonly workers: JobProcess[] = [];
  readonly etcdEvents: EtcdEvent[] = [];
  readonly dataset: string[];
  readonly group = "drill";
  /** The workers' token with `auth: "tokens"` (id, secret, the file the workers read). */
  workerToken:
    | { readonly id: string; readonly token: string; readonly file: string; readonly dir: string }
    | undefined;
  readonly proxy: TcpProxy | undefined;
  /** The drill's PostgreSQL, with `dataSource: "postgres"`. */
  postgres: PostgresServer | undefined;
  readonly #options: DrillEnvironmentOptions;
  #watcher: Watcher | undefined;
  #nextWorker = 0;
  /** Hosts not yet given to a worker (netns mode), and the host of each node id that ran. */
  readonly #freeWorkerHosts: NetHost[];
  readonly #workerHosts = new Map<string, NetHost>();

  private constructor(
    etcd: EtcdCluster,
    rm: RmCluster,
    client: Etcd3,
    dataset: string[],
    options: DrillEnvironmentOptions,
    proxy: TcpProxy | undefined,
    net: { net: VirtualNetwork; etcd: NetHost[]; workers: NetHost[] } | undefined,
  ) {
    this.net = net?.net;
    this.etcdHosts = net?.etcd ?? [];
    this.#freeWorkerHosts = net?.workers ?? [];
    this.etcd = etcd;
    this.rm = rm;
    this.client = client;
    this.dataset = dataset;
    this.#options = options;
    this.proxy = proxy;
  }

  static async start(options: DrillEnvironmentOptions): Promise<DrillEnvironment> {
    if (options.network === "netns" && options.proxyFirstReplica === true)
      throw new HarnessConfigError("proxyFirstReplica is for loopback drills: in netns mode, cut the link");
    let hosts: { net: VirtualNetwork; etcd: NetHost[]; rm: NetHost[]; workers: NetHost[] } | undefined;
    let etcd: EtcdCluster;
    try {
      if (options.network === "netns") {
        const net = await VirtualNetwork.create();
        hosts = { net, etcd: [], rm: [], workers: [] };
        hosts.etcd = await net.addHosts(["etcd0", "etcd1", "etcd2"]);
        hosts.rm = await net.addHosts(["rm1", "rm2", "rm3"]);
        const n = options.workers + (options.spareWorkerHosts ?? 4);
        hosts.workers = await net.addHosts(Array.from({ length: n }, (_, i) => `w${i + 1}`));
      }
      etcd = await startEtcdCluster({ size: 3, hosts: hosts?.etcd });
    } catch (e) {
      await hosts?.net.close();
      throw e;
    }
    const client = new Etcd3({ hosts: etcd.endpoints });
    let proxy: TcpProxy | undefined;
    let postgres: PostgresServer | undefined;
    try {
      const namespace = `/drill-${Date.now().toString(36)}`;
      const flags = [...coordinatorArgs(drillTiming)];
      let workerToken: DrillEnvironment["workerToken"];
      if (options.auth === "tokens") {
        const made = await newToken("drill", "worker");
        await client
          .put(keyLayout(namespace).authToken("drill", made.record.id))
          .value(JSON.stringify(made.record));
        const dir = await mkdtemp(join(tmpdir(), "drill-token-"));
        const file = join(dir, "token");
        await writeFile(file, `${made.token}\n`, { mode: 0o600 });
        workerToken = { id: made.record.id, token: made.token, file, dir };
        flags.push("--auth", "tokens");
      }
      const records = sequentialRecords(options.items);
      if (options.dataSource === "postgres") {
        if (options.network === "netns")
          throw new HarnessConfigError("the PostgreSQL drills run on loopback");
        postgres = await startPostgres();
        const dataSource = {
          kind: "postgres",
          table: "drill_items",
          host: postgres.host,
          port: postgres.port,
          user: postgres.user,
          passwordFile: postgres.passwordFile,
        };
        await client.put(keyLayout(namespace).config("drill")).value(JSON.stringify({ dataSource }));
        // Loaded through the source's own batched upserts (what PutShardData runs).
        const source = PostgresDataSource.create(
          parseDataSourceConfig("drill", dataSource) as PostgresSourceConfig,
        );
        try {
          await source.put(
            "drill",
            (async function* () {
              for (const r of records)
                yield { id: r.id, payload: new TextEncoder().encode(String(r.payload)) };
            })(),
            { signal: new AbortController().signal },
          );
        } finally {
          await source.close();
        }
      } else {
        // The same loader and layout as `coordinator data load` (records under `<ns>-data/`).
        await loadShardData(client, keyLayout(namespace), "drill", records);
      }
      const dataset = records.map((r) => r.id);
      let etcdFor: ((i: number) => readonly string[]) | undefined;
      if (options.proxyFirstReplica === true) {
        const first = new URL(etcd.endpoints[0] ?? "");
        proxy = await startTcpProxy({ target: { host: first.hostname, port: Number(first.port) } });
        const p = proxy;
        etcdFor = (i) => (i === 0 ? [p.url] : etcd.endpoints);
      }
      const rmHosts = hosts?.rm;
      const rm = await RmCluster.start({
        etcd: etcd.endpoints,
        namespace,
        args: flags,
        argsFor: options.replicaArgs,
        etcdFor,
        hostFor: rmHosts === undefined ? undefined : (i) => rmHosts[i] as NetHost,
      });
      const env = new DrillEnvironment(etcd, rm, client, dataset, options, proxy, hosts);
      env.postgres = postgres;
      env.workerToken = workerToken;
      await env.#record(namespace);
      return env;
    } catch (e) {
      client.close();
      await proxy?.close();
      await postgres?.stop();
      await etcd.stop();
      await hosts?.net.close();
      throw e;
    }
  }

  /** The virtual network; throws in loopback mode (a scenario that cuts links needs `network: "netns"`). */
  requireNet(): VirtualNetwork {
    if (this.net === undefined) throw new HarnessConfigError('this drill needs network: "netns"');
    return this.net;
  }

  /** The hosts of the replicas (netns mode). */
  get replicaHosts(): NetHost[] {
    return this.rm.replicas.map((r) => r.host as NetHost);
  }

  /** The hosts every worker of this drill has run on (netns mode). */
  get workerHosts(): NetHost[] {
    return [...this.#workerHosts.values()];
  }

  /** The host a worker runs on. */
  hostOf(worker: JobProcess): ProcessHost {
    return worker.host;
  }

  get namespace(): string {
    return this.rm.namespace;
  }

  /** Records every put/delete under the namespace from revision 1, with the time seen. */
  async #record(namespace: string): Promise<void> {
    this.#watcher = await this.client.watch().prefix(`${namespace}/`).startRevision("1").create();
    const push =
      (type: "put" | "delete") =>
      (kv: { key: Buffer; value: Buffer; mod_revision: string; create_revision: string }) => {
        this.etcdEvents.push({
          at: Date.now(),
          type,
          key: kv.key.toString(),
          value: kv.value.toString(),
          modRevision: Number(kv.mod_revision),
          createRevision: Number(kv.create_revision),
        });
      };
    this.#watcher.on("put", push("put"));
    this.#watcher.on("delete", push("delete"));
  }

  /**
   * Starts a worker process (ids worker-1, worker-2, ...; or `node`, which may have run
   * before: the new process is its next incarnation, on the same host).
   */
  startWorker(
    options: { waitForSignal?: boolean; node?: string; extraArgs?: readonly string[] } = {},
  ): JobProcess {
    let node = options.node;
    if (node === undefined) {
      this.#nextWorker += 1;
      node = `worker-${this.#nextWorker}`;
    }
    const incarnation = this.workers.filter((w) => w.node === node).length + 1;
    const tokenArgs = this.workerToken === undefined ? [] : ["--token-file", this.workerToken.file];
    const job = new JobProcess({
      node,
      incarnation,
      host: this.#hostFor(node),
      group: this.group,
      coordinators: this.rm.addresses,
      itemMs: this.#options.itemMs,
      loop: false,
      checkpointEtcd: this.etcd.endpoints,
      checkpointPrefix: `${this.namespace}/checkpoints/`,
      waitForSignal: options.waitForSignal === true,
      extraArgs: [...tokenArgs, ...(options.extraArgs ?? [])],
    });
    this.workers.push(job);
    return job;
  }

  #hostFor(node: string): ProcessHost | undefined {
    if (this.net === undefined) return undefined;
    let host = this.#workerHosts.get(node);
    if (host === undefined) {
      host = this.#freeWorkerHosts.shift();
      if (host === undefined)
        throw new HarnessConfigError(`no spare worker host for ${node}: raise spareWorkerHosts`);
      this.#workerHosts.set(node, host);
    }
    return host;
  }

  /**
   * A crash-looping worker: starts `node`, and once it has joined (a loaded machine can
   * take seconds to start a process) SIGKILLs it after about `periodMs` (±20 %), then
   * starts it again at once, `times` times; resolves when the last process is dead.
   * `signal` ends the loop early (the running process is killed too).
   */
  async crashLoop(options: {
    node: string;
    times: number;
    periodMs?: number;
    signal?: AbortSignal;
  }): Promise<CrashLoopResult> {
    const period = options.periodMs ?? 1000;
    const startedAt = Date.now();
    let starts = 0;
    let joins = 0;
    const wait = (ms: number) => sleep(ms, undefined, { signal: options.signal }).catch(() => undefined);
    for (let i = 0; i < options.times && options.signal?.aborted !== true; i++) {
      const job = this.startWorker({ node: options.node });
      starts += 1;
      const joined = await job.waitFor((e) => e.event === "joined", 30_000).catch(() => undefined);
      if (joined !== undefined) joins += 1;
      await wait(period * (0.8 + 0.4 * Math.random()));
      job.signal("SIGKILL");
      await job.exited;
    }
    return { starts, joins, startedAt, endedAt: Date.now() };
  }

  /** Every worker event so far, merged. */
  events(): WorkerEvent[] {
    return this.workers.flatMap((w) => w.events as WorkerEvent[]);
  }

  assignment(): Promise<AssignmentRecord | null> {
    return readAssignment(this.client, this.namespace, this.group);
  }

  /** Waits until every item is checkpointed (or the timeout passes); returns how many are. */
  async waitForAllProcessed(timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    let done = 0;
    while (performance.now() < deadline) {
      done = await this.client.getAll().prefix(`${this.namespace}/checkpoints/`).count();
      if (done >= this.dataset.length) return done;
      await new Promise((r) => setTimeout(r, 200));
    }
    return done;
  }

  async stop(): Promise<void> {
    try {
      await Promise.all(this.workers.map((w) => w.stop()));
      await this.#watcher?.cancel().catch(() => undefined);
      await this.rm.stop();
      await this.proxy?.close();
      this.client.close();
      await this.etcd.stop();
      await this.postgres?.stop();
      if (this.workerToken !== undefined) await rm(this.workerToken.dir, { recursive: true, force: true });
    } finally {
      // Every namespace goes, whatever failed above (processes were killed first, so
      // nothing keeps a host's namespace alive).
      await this.net?.close();
    }
  }
}
