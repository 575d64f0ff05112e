import { type AssignmentRecord, keyLayout, loadShardData, sequentialRecords } from "@org/coordinator";
import { Etcd3, type Watcher } from "etcd3";
import { type EtcdCluster, startEtcdCluster } from "../harness/etcd-cluster.js";
import { startTcpProxy, type TcpProxy } from "../harness/tcp-proxy.js";
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
}

/**
 * Everything a drill runs against: a 3-member etcd, 3 replica processes, N worker processes
 * (the example dataset job, with an etcd checkpoint), the dataset, and a recorder of every
 * etcd write under the namespace with its revision.
 */
export class DrillEnvironment {
  readonly etcd: EtcdCluster;
  readonly rm: RmCluster;
  readonly client: Etcd3;
  readonly workers: JobProcess[] = [];
  readonly etcdEvents: EtcdEvent[] = [];
  readonly dataset: string[];
  readonly group = "drill";
  readonly proxy: TcpProxy | undefined;
  readonly #options: DrillEnvironmentOptions;
  #watcher: Watcher | undefined;
  #nextWorker = 0;

  private constructor(
    etcd: EtcdCluster,
    rm: RmCluster,
    client: Etcd3,
    dataset: string[],
    options: DrillEnvironmentOptions,
    proxy: TcpProxy | undefined,
  ) {
    this.etcd = etcd;
    this.rm = rm;
    this.client = client;
    this.dataset = dataset;
    this.#options = options;
    this.proxy = proxy;
  }

  static async start(options: DrillEnvironmentOptions): Promise<DrillEnvironment> {
    const etcd = await startEtcdCluster({ size: 3 });
    const client = new Etcd3({ hosts: etcd.endpoints });
    let proxy: TcpProxy | undefined;
    try {
      const flags = coordinatorArgs(drillTiming);
      const namespace = `/drill-${Date.now().toString(36)}`;
      // The same loader and layout as `coordinator data load` (records under `<ns>-data/`).
      const records = sequentialRecords(options.items);
      await loadShardData(client, keyLayout(namespace), "drill", records);
      const dataset = records.map((r) => r.id);
      let etcdFor: ((i: number) => readonly string[]) | undefined;
      if (options.proxyFirstReplica === true) {
        const first = new URL(etcd.endpoints[0] ?? "");
        proxy = await startTcpProxy({ target: { host: first.hostname, port: Number(first.port) } });
        const p = proxy;
        etcdFor = (i) => (i === 0 ? [p.url] : etcd.endpoints);
      }
      const rm = await RmCluster.start({ etcd: etcd.endpoints, namespace, args: flags, etcdFor });
      const env = new DrillEnvironment(etcd, rm, client, dataset, options, proxy);
      await env.#record(namespace);
      return env;
    } catch (e) {
      client.close();
      await proxy?.close();
      await etcd.stop();
      throw e;
    }
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

  /** Starts a worker process (ids worker-1, worker-2, ...). */
  startWorker(options: { waitForSignal?: boolean } = {}): JobProcess {
    this.#nextWorker += 1;
    const job = new JobProcess({
      node: `worker-${this.#nextWorker}`,
      group: this.group,
      coordinators: this.rm.addresses,
      itemMs: this.#options.itemMs,
      loop: false,
      checkpointEtcd: this.etcd.endpoints,
      checkpointPrefix: `${this.namespace}/checkpoints/`,
      waitForSignal: options.waitForSignal === true,
    });
    this.workers.push(job);
    return job;
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
    await Promise.all(this.workers.map((w) => w.stop()));
    await this.#watcher?.cancel().catch(() => undefined);
    await this.rm.stop();
    await this.proxy?.close();
    this.client.close();
    await this.etcd.stop();
  }
}
