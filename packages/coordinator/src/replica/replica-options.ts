import { hostname } from "node:os";
import { CoordinatorError } from "../errors.js";
import { type AuthMode, authModes } from "../server/authorizer.js";
import { type StrategyName, strategyNames } from "../sharding/assignment.js";
import { resolveTaskOptions, type TaskOptions, type TaskOptionsInput } from "../tasks/task-options.js";

/** Settings of one replica, every field resolved (see {@link resolveReplicaOptions}). */
export interface ReplicaOptions {
  /** etcd client URLs. @default ["http://127.0.0.1:2379"] */
  readonly etcdEndpoints: readonly string[];
  /**
   * host:port the gRPC server binds. Without TLS it must be a loopback address unless
   * {@link ReplicaOptions.insecure}. @default "127.0.0.1:50051" without TLS, "0.0.0.0:50051" with TLS or insecure
   */
  readonly listen: string;
  /** host:port workers and peers use to reach this replica. @default listen, with 0.0.0.0 replaced by the host name */
  readonly advertise: string;
  /** Replica id in logs, the election value and member records. @default "<hostname>-<pid>" */
  readonly id: string;
  /** etcd key prefix. @default "/shardmgr" */
  readonly namespace: string;
  /** Election lease TTL in seconds; a dead leader is replaced within about this. @default 3 */
  readonly leaderTtlSec: number;
  /** Interval workers heartbeat at, in ms. @default 1000 */
  readonly heartbeatIntervalMs: number;
  /** A member silent this long is expelled, in ms. @default 5000 */
  readonly sessionTimeoutMs: number;
  /** TTL of each member's etcd lease in seconds; must outlast a leader failover. @default 15 */
  readonly memberLeaseTtlSec: number;
  /** Debounce between a membership change and the new version, in ms. @default 1000 */
  readonly rebalanceDelayMs: number;
  /**
   * Longest wait between the first change of a burst and its version, however many changes
   * follow (continuous churn must not leave a departed member's shards unowned), in ms.
   * @default 5 x rebalanceDelayMs
   */
  readonly rebalanceMaxDelayMs: number;
  /**
   * How long a worker that left for a planned restart (`close({ restart: true })`) keeps its
   * membership and shards, in ms. @default sessionTimeoutMs
   */
  readonly restartGraceMs: number;
  /** A stream that sends no Hello this long after opening is closed, in ms. @default 10000 */
  readonly helloTimeoutMs: number;
  /** Worker streams one replica holds at most; more are refused with RESOURCE_EXHAUSTED. @default 50000 */
  readonly maxStreams: number;
  /** Concurrent HTTP/2 streams per client connection (SETTINGS_MAX_CONCURRENT_STREAMS). @default 1000 */
  readonly maxStreamsPerConnection: number;
  /** GetShardInfo and FetchShardData calls per second per replica, sustained (burst: twice). @default 2000 */
  readonly unaryRatePerSecond: number;
  /** GetShardInfo and FetchShardData calls per second per (group, node), sustained (burst: twice). @default 20 */
  readonly unaryRatePerNode: number;
  /** Default strategy of groups without a config key. @default "modulo" */
  readonly strategy: StrategyName;
  /** Default shard count for `sticky`. @default 16 */
  readonly shards: number;
  /**
   * host:port of the HTTP health/metrics/status server; empty disables it. HTTPS with the gRPC
   * certificate when TLS is on; plaintext only on a loopback address unless
   * {@link ReplicaOptions.insecure}. @default ""
   */
  readonly httpListen: string;
  /** Largest inbound gRPC message, in bytes (a SubmitTasks batch must fit). @default 4194304 */
  readonly maxMessageBytes: number;
  /** The task subsystem (`--max-task-bytes`, `--max-queued-tasks`, `--task-retention`). */
  readonly tasks: TaskOptions;
  /** PEM certificate chain of the gRPC (and HTTP) listener; empty: plaintext. Reloaded when the file changes. @default "" */
  readonly tlsCertFile: string;
  /** PEM private key of {@link ReplicaOptions.tlsCertFile}; required with it. @default "" */
  readonly tlsKeyFile: string;
  /** PEM CA bundle; with it, gRPC clients must present a certificate it signed (mutual TLS). @default "" */
  readonly tlsClientCaFile: string;
  /**
   * Lets plaintext listeners bind non-loopback addresses. Anyone who reaches the port can then
   * join groups and read data: logged as a warning at start and shown in /status. @default false
   */
  readonly insecure: boolean;
  /**
   * Who may call (see server/authorizer.ts): `none`, `tokens` (bearer tokens of
   * `<ns>/auth/tokens/`) or `mtls` (client certificate identities; needs --tls-client-ca).
   * @default "none"
   */
  readonly auth: AuthMode;
  /**
   * A file whose first line is the bearer token that opens `/metrics`, `/status` and every other
   * non-probe HTTP path to non-loopback callers (`/healthz`, `/readyz` stay open). Without it,
   * those paths answer only loopback callers (everyone with `--insecure`). @default ""
   */
  readonly httpTokenFile: string;
  /** `--etcd-ca`: PEM CA of etcd's server certificates (use https:// endpoints). @default "" */
  readonly etcdCaFile: string;
  /** `--etcd-cert` / `--etcd-key`: client certificate for etcd's `--client-cert-auth`. @default "" */
  readonly etcdCertFile: string;
  readonly etcdKeyFile: string;
  /** `--etcd-user`: etcd user (its password from `--etcd-password-file` or `RM_ETCD_PASSWORD`). @default "" */
  readonly etcdUser: string;
  /** `--etcd-password-file`: first line is the etcd user's password. @default "" */
  readonly etcdPasswordFile: string;
}

/** What a caller may pass: every field optional, strings accepted for numbers (flags, env). */
export type ReplicaOptionsInput = {
  [K in Exclude<keyof ReplicaOptions, "tasks">]?: ReplicaOptions[K] | string | boolean | undefined;
} & { tasks?: TaskOptionsInput };

function int(name: string, raw: unknown, min: number, max: number): number {
  const n = typeof raw === "number" ? raw : Number(String(raw).trim());
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new CoordinatorError(
      "invalid_config",
      `--${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/** Whether `host` (of a host:port, brackets allowed) is a loopback address. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function flag(name: string, raw: unknown): boolean {
  if (raw === undefined || raw === false || raw === "" || raw === "false" || raw === "0") return false;
  if (raw === true || raw === "true" || raw === "1") return true;
  throw new CoordinatorError(
    "invalid_config",
    `--${name} takes no value (or true/false), got ${JSON.stringify(raw)}`,
  );
}

function hostPort(name: string, raw: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
  if (!m || Number(m[2]) > 65535) {
    throw new CoordinatorError("invalid_config", `--${name} must be host:port, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/**
 * Resolves and checks settings once, so the rest of the code never sees a partial or
 * inconsistent configuration. Throws `CoordinatorError("invalid_config")` with one clear line.
 *
 * @example
 * ```ts
 * const options = resolveReplicaOptions({ etcdEndpoints: ["http://127.0.0.1:2379"], listen: "127.0.0.1:50051" });
 * ```
 */
export function resolveReplicaOptions(input: ReplicaOptionsInput = {}): ReplicaOptions {
  const pick = <K extends Exclude<keyof ReplicaOptions, "tasks">>(k: K) => input[k];
  const endpointsRaw = pick("etcdEndpoints") ?? ["http://127.0.0.1:2379"];
  const etcdEndpoints = (
    typeof endpointsRaw === "string"
      ? endpointsRaw.split(",")
      : typeof endpointsRaw === "boolean"
        ? []
        : [...endpointsRaw]
  )
    .map((e) => e.trim())
    .filter((e) => e.length > 0);
  if (etcdEndpoints.length === 0)
    throw new CoordinatorError("invalid_config", "--etcd needs at least one endpoint");
  for (const e of etcdEndpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(e)) {
      throw new CoordinatorError(
        "invalid_config",
        `--etcd endpoint ${JSON.stringify(e)} is not http(s)://host:port`,
      );
    }
  }
  const tlsCertFile = String(pick("tlsCertFile") ?? "");
  const tlsKeyFile = String(pick("tlsKeyFile") ?? "");
  const tlsClientCaFile = String(pick("tlsClientCaFile") ?? "");
  if ((tlsCertFile === "") !== (tlsKeyFile === ""))
    throw new CoordinatorError("invalid_config", "--tls-cert and --tls-key go together");
  if (tlsClientCaFile !== "" && tlsCertFile === "")
    throw new CoordinatorError("invalid_config", "--tls-client-ca needs --tls-cert and --tls-key");
  const insecure = flag("insecure", pick("insecure"));
  const authRaw = String(pick("auth") ?? "none");
  if (!(authModes as readonly string[]).includes(authRaw))
    throw new CoordinatorError(
      "invalid_config",
      `--auth must be one of ${authModes.join(", ")}, got ${JSON.stringify(authRaw)}`,
    );
  const auth = authRaw as AuthMode;
  if (auth === "mtls" && tlsClientCaFile === "")
    throw new CoordinatorError(
      "invalid_config",
      "--auth mtls needs --tls-client-ca (and --tls-cert, --tls-key)",
    );
  const tls = tlsCertFile !== "";
  const listen = hostPort(
    "listen",
    String(pick("listen") ?? (tls || insecure ? "0.0.0.0:50051" : "127.0.0.1:50051")),
  );
  // DESIGN.md, Security: plaintext only on loopback, anything else needs an explicit flag.
  if (!tls && !insecure && !isLoopbackHost(listen.slice(0, listen.lastIndexOf(":"))))
    throw new CoordinatorError(
      "invalid_config",
      `--listen ${listen} is not a loopback address: give --tls-cert and --tls-key, or --insecure to serve plaintext on the network`,
    );
  const advertiseRaw = pick("advertise");
  const advertise =
    advertiseRaw !== undefined && advertiseRaw !== ""
      ? hostPort("advertise", String(advertiseRaw))
      : listen.replace(/^(0\.0\.0\.0|\[::\]):/, `${hostname()}:`);
  const id = String(pick("id") ?? `${hostname()}-${process.pid}`);
  if (!/^[A-Za-z0-9._:-]{1,128}$/.test(id)) {
    throw new CoordinatorError(
      "invalid_config",
      `--id must be 1-128 characters of [A-Za-z0-9._:-], got ${JSON.stringify(id)}`,
    );
  }
  const namespace = String(pick("namespace") ?? "/shardmgr").replace(/\/+$/, "");
  if (!/^\/[A-Za-z0-9._\-/]*$/.test(namespace) || namespace.length < 2) {
    throw new CoordinatorError(
      "invalid_config",
      `--namespace must start with / and be a plain path, got ${JSON.stringify(namespace)}`,
    );
  }
  const leaderTtlSec = int("leader-ttl", pick("leaderTtlSec") ?? 3, 2, 3600);
  const heartbeatIntervalMs = int("heartbeat-interval", pick("heartbeatIntervalMs") ?? 1000, 50, 600_000);
  const sessionTimeoutMs = int("session-timeout", pick("sessionTimeoutMs") ?? 5000, 100, 3_600_000);
  const restartGraceMs = int("restart-grace", pick("restartGraceMs") ?? sessionTimeoutMs, 0, 3_600_000);
  const memberLeaseTtlSec = int("member-lease-ttl", pick("memberLeaseTtlSec") ?? 15, 2, 86_400);
  const rebalanceDelayMs = int("rebalance-delay", pick("rebalanceDelayMs") ?? 1000, 0, 600_000);
  const rebalanceMaxDelayMs = int(
    "rebalance-max-delay",
    pick("rebalanceMaxDelayMs") ?? 5 * rebalanceDelayMs,
    0,
    3_600_000,
  );
  if (rebalanceMaxDelayMs < rebalanceDelayMs)
    throw new CoordinatorError(
      "invalid_config",
      `--rebalance-max-delay (${rebalanceMaxDelayMs} ms) must not be below --rebalance-delay (${rebalanceDelayMs} ms)`,
    );
  const helloTimeoutMs = int("hello-timeout", pick("helloTimeoutMs") ?? 10_000, 100, 600_000);
  const maxStreams = int("max-streams", pick("maxStreams") ?? 50_000, 1, 10_000_000);
  const maxStreamsPerConnection = int(
    "max-streams-per-connection",
    pick("maxStreamsPerConnection") ?? 1000,
    1,
    1_000_000,
  );
  const unaryRatePerSecond = int("unary-rate", pick("unaryRatePerSecond") ?? 2000, 1, 10_000_000);
  const unaryRatePerNode = int("unary-rate-per-node", pick("unaryRatePerNode") ?? 20, 1, 1_000_000);
  const strategyRaw = String(pick("strategy") ?? "modulo");
  if (!(strategyNames as readonly string[]).includes(strategyRaw)) {
    throw new CoordinatorError(
      "invalid_config",
      `--strategy must be one of ${strategyNames.join(", ")}, got ${JSON.stringify(strategyRaw)}`,
    );
  }
  const shards = int("shards", pick("shards") ?? 16, 1, 65_536);
  const httpRaw = String(pick("httpListen") ?? "");
  const httpListen = httpRaw === "" ? "" : hostPort("http-listen", httpRaw);
  // The HTTP listener serves HTTPS with the gRPC certificate; plaintext only on loopback.
  if (
    httpListen !== "" &&
    !tls &&
    !insecure &&
    !isLoopbackHost(httpListen.slice(0, httpListen.lastIndexOf(":")))
  )
    throw new CoordinatorError(
      "invalid_config",
      `--http-listen ${httpListen} is not a loopback address: give --tls-cert and --tls-key, or --insecure to serve plaintext on the network`,
    );
  const httpTokenFile = String(pick("httpTokenFile") ?? "");
  const maxMessageBytes = int(
    "max-message-bytes",
    pick("maxMessageBytes") ?? 4 * 1024 * 1024,
    1024,
    64 * 1024 * 1024,
  );
  const tasks = resolveTaskOptions(input.tasks ?? {});

  // The consistency rules the design depends on.
  if (sessionTimeoutMs <= 2 * heartbeatIntervalMs) {
    throw new CoordinatorError(
      "invalid_config",
      `--session-timeout (${sessionTimeoutMs} ms) must be above two heartbeat intervals (${2 * heartbeatIntervalMs} ms)`,
    );
  }
  // A leader failover takes up to the leader TTL plus a reconnect; a worker whose session
  // ran out before that fences itself and pauses its shards for nothing.
  if (sessionTimeoutMs <= leaderTtlSec * 1000 + heartbeatIntervalMs) {
    throw new CoordinatorError(
      "invalid_config",
      `--session-timeout (${sessionTimeoutMs} ms) must be above --leader-ttl plus one heartbeat interval (${leaderTtlSec * 1000 + heartbeatIntervalMs} ms), or workers pause during every failover`,
    );
  }
  if (memberLeaseTtlSec <= leaderTtlSec) {
    throw new CoordinatorError(
      "invalid_config",
      `--member-lease-ttl (${memberLeaseTtlSec} s) must be longer than --leader-ttl (${leaderTtlSec} s), or members vanish during a failover`,
    );
  }
  // A member held for a restart is kept alive without heartbeats; its lease must not run
  // out first (the leader renews it, but not across a failover of the whole grace).
  if (memberLeaseTtlSec * 1000 <= restartGraceMs) {
    throw new CoordinatorError(
      "invalid_config",
      `--member-lease-ttl (${memberLeaseTtlSec} s) must be longer than --restart-grace (${restartGraceMs} ms)`,
    );
  }
  if (memberLeaseTtlSec * 1000 <= sessionTimeoutMs) {
    throw new CoordinatorError(
      "invalid_config",
      `--member-lease-ttl (${memberLeaseTtlSec} s) must be longer than --session-timeout (${sessionTimeoutMs} ms)`,
    );
  }
  return {
    etcdEndpoints,
    listen,
    advertise,
    id,
    namespace,
    leaderTtlSec,
    heartbeatIntervalMs,
    sessionTimeoutMs,
    memberLeaseTtlSec,
    rebalanceDelayMs,
    rebalanceMaxDelayMs,
    restartGraceMs,
    helloTimeoutMs,
    maxStreams,
    maxStreamsPerConnection,
    unaryRatePerSecond,
    unaryRatePerNode,
    strategy: strategyRaw as StrategyName,
    shards,
    httpListen,
    maxMessageBytes,
    tasks,
    tlsCertFile,
    tlsKeyFile,
    tlsClientCaFile,
    insecure,
    httpTokenFile,
    auth,
    etcdCaFile: String(pick("etcdCaFile") ?? ""),
    etcdCertFile: String(pick("etcdCertFile") ?? ""),
    etcdKeyFile: String(pick("etcdKeyFile") ?? ""),
    etcdUser: String(pick("etcdUser") ?? ""),
    etcdPasswordFile: String(pick("etcdPasswordFile") ?? ""),
  };
}
