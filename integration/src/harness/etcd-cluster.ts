import { startBinaryEtcdCluster } from "./binary-etcd-cluster.js";
import { startContainerEtcdCluster } from "./container-etcd-cluster.js";
import { HarnessConfigError } from "./errors.js";
import type { EtcdMember, WaitHealthyOptions } from "./etcd-member.js";
import { type EtcdProvider, resolveEtcdProvider } from "./etcd-provider.js";
import type { ProcessHost } from "./process-host.js";

/** Options of {@link startEtcdCluster}. */
export interface EtcdClusterOptions {
  /** Number of members; defaults to 1. */
  readonly size?: 1 | 3;
  /** Defaults to `$ETCD_PROVIDER`, else `"binary"`. */
  readonly provider?: EtcdProvider;
  /** Prefix of member names (`<name>-0`, …) and of the cluster token; defaults to `"etcd"`. */
  readonly name?: string;
  /**
   * Directory for member logs, kept after `stop()` for post-mortems. By default each
   * log lives in the member's temp dir and is deleted with it. Binary provider only.
   */
  readonly logDir?: string;
  /** How long to wait for every member to become healthy; defaults to 30 s. */
  readonly startTimeoutMs?: number;
  /** Aborting cancels a start in progress (everything started so far is cleaned up). */
  readonly signal?: AbortSignal;
  /**
   * One host per member (e.g. hosts of a `VirtualNetwork`): member i runs on `hosts[i]`
   * and listens on its address, ports 2379 (client) and 2380 (peer). By default every
   * member runs on loopback, on free ports. Binary provider only.
   */
  readonly hosts?: readonly ProcessHost[];
  /** More etcd flags for every member, e.g. `["--quota-backend-bytes", "1048576"]`. */
  readonly extraArgs?: readonly string[];
}

/** {@link EtcdClusterOptions} with defaults applied, as passed to a provider. */
export interface ResolvedEtcdClusterOptions {
  readonly size: 1 | 3;
  readonly name: string;
  readonly logDir: string | undefined;
  readonly startTimeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly hosts: readonly ProcessHost[] | undefined;
  readonly extraArgs: readonly string[];
}

/** A running etcd cluster owned by one test. */
export interface EtcdCluster extends AsyncDisposable {
  readonly provider: EtcdProvider;
  /** Client URLs of all members, e.g. `http://127.0.0.1:40123`, for `new Etcd3({ hosts })`. */
  readonly endpoints: string[];
  readonly members: EtcdMember[];
  /** Wait until every running member reports healthy. */
  waitHealthy(options?: WaitHealthyOptions): Promise<void>;
  /**
   * Stop every member (SIGTERM, SIGKILL after 3 s; paused ones are resumed first,
   * the leader goes last) and delete all temp dirs. Safe to call more than once;
   * later calls return the same promise. Members cannot be restarted afterwards.
   */
  stop(): Promise<void>;
  /** Same as `stop()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const DEFAULT_START_TIMEOUT_MS = 30_000;

/**
 * Starts a fresh etcd cluster for a test and resolves once every member is healthy.
 *
 * @example
 * ```ts
 * await using cluster = await startEtcdCluster({ size: 3 });
 * const client = new Etcd3({ hosts: cluster.endpoints });
 * ```
 */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  const name = options.name ?? "etcd";
  // Names end up in etcd flags, file names and URLs-adjacent strings: keep them boring.
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$/.test(name)) {
    throw new HarnessConfigError(`cluster name ${JSON.stringify(name)} must match [A-Za-z0-9][A-Za-z0-9_-]*`);
  }
  const size = options.size ?? 1;
  if (size !== 1 && size !== 3) throw new HarnessConfigError(`cluster size must be 1 or 3, got ${size}`);
  if (options.hosts !== undefined && options.hosts.length !== size)
    throw new HarnessConfigError(`${options.hosts.length} hosts given for ${size} members`);
  const resolved: ResolvedEtcdClusterOptions = {
    size,
    name,
    logDir: options.logDir,
    startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
    signal: options.signal,
    hosts: options.hosts,
    extraArgs: options.extraArgs ?? [],
  };
  resolved.signal?.throwIfAborted();
  switch (resolveEtcdProvider(options.provider)) {
    case "binary":
      return startBinaryEtcdCluster(resolved);
    case "testcontainers":
      return startContainerEtcdCluster(resolved);
  }
}
