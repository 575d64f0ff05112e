import { AsyncLocalStorage } from "node:async_hooks";
import { Metadata } from "@grpc/grpc-js";
import {
  ConsecutiveBreaker,
  ConstantBackoff,
  circuitBreaker,
  ExponentialBackoff,
  handleWhen,
  type IBackoff,
  type IDefaultPolicyContext,
  type IPolicy,
  noop,
  retry,
} from "cockatiel";
import {
  Etcd3,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type ICallable,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
  LeaseClient,
} from "etcd3";
import type { EtcdSecurity } from "./etcd-security.js";

/** Deadline of every unary etcd call, in ms: a call to a cluster without quorum fails instead of hanging. */
export const etcdCallTimeoutMs = 2000;

/**
 * Largest answer the client accepts from etcd, in bytes: Go's clientv3 default
 * (`math.MaxInt32`). etcd3's 4 MiB (grpc-js's default) made one range over data records
 * fail with RESOURCE_EXHAUSTED, and etcd3 then counted that against the host and reset its
 * channels. etcd is trusted; what bounds memory is the reader's page size (a page of `n`
 * keys is at most `n` x etcd's `--max-request-bytes`, 1.5 MiB by default, per value).
 */
export const etcdMaxReceiveBytes = 2 ** 31 - 1;

/**
 * HTTP/2 keep-alive PINGs on the etcd connections: a member that vanished without a FIN
 * or RST (a partition, a paused VM) is detected within `time + timeout` = 15 s and its
 * streams (watches, lease keep-alives) fail over instead of hanging silently. etcd refuses
 * pings more often than its `--grpc-keepalive-min-time` (5 s by default: two strikes and
 * it sends GOAWAY), so 10 s leaves room for timer jitter. Pings go out only while a call or
 * stream is open (etcd's default policy refuses pings without streams).
 */
const keepaliveTimeMs = 10_000;
const keepaliveTimeoutMs = 5000;

/**
 * One unary call across its attempts: the etcd method, set from `defaultCallOptions` (see
 * {@link globalRetryPolicy}), and the deadline its first attempt set, which every retry
 * keeps (as Go's context deadline covers its retries): a call fails within 2 s, retried
 * or not.
 */
const currentCall = new AsyncLocalStorage<{ method: string; deadline?: number }>();

/**
 * Calls whose second execution has the effect of one (reads, and lease grant/revoke, as
 * Go's clientv3 `retry.go` marks them "repeatable": a duplicated grant only leaves a lease
 * to expire by its TTL).
 */
const repeatable = new Set([
  "KV.range",
  "Lease.leaseGrant",
  "Lease.leaseRevoke",
  "Lease.leaseTimeToLive",
  "Lease.leaseLeases",
  "Maintenance.status",
  "Maintenance.alarm",
  "Cluster.memberList",
]);

/**
 * Whether etcd3 may run a failed call again (on the next endpoint in its shuffled order).
 * Go's client/v3/retry.go rules:
 * - only UNAVAILABLE (no connection, etcd has no leader, the member is stopping). Never
 *   DEADLINE_EXCEEDED: the 2 s deadline is the caller's budget, and a write that timed out
 *   may have committed; etcd3's default retried it, which is how one campaign could wait
 *   forever for its own key. Never RESOURCE_EXHAUSTED: NOSPACE does not heal in 50 ms and
 *   an answer over the receive limit will not shrink.
 * - a write (put, delete, txn, compact) only when grpc-js failed it before it left the
 *   client ("No connection established", grpc-js's picker status for a channel that is not
 *   connected: Go's "there is no connection available"). Telling this apart needs the
 *   description, as in Go: grpc-js reports both cases as UNAVAILABLE with no other mark.
 *
 * @internal exported for tests
 */
export function isSafeToRetry(method: string, e: unknown): boolean {
  if (!(e instanceof GRPCUnavailableError)) return false;
  if (repeatable.has(method)) return true;
  return /^\d+ UNAVAILABLE: No connection established/.test(e.message);
}

/**
 * etcd3's global policy: at most 2 retries (3 attempts, each on another endpoint when
 * there are several), 50 ms apart and all within the first attempt's 2 s deadline, for
 * what {@link isSafeToRetry} allows. A cockatiel
 * policy cannot see which method it runs, so the method is carried in an
 * AsyncLocalStorage box that `defaultCallOptions` fills for each attempt.
 */
function globalRetryPolicy(): IPolicy<IDefaultPolicyContext> {
  const inner = retry(
    handleWhen((e) => isSafeToRetry(currentCall.getStore()?.method ?? "", e)),
    { maxAttempts: 2, backoff: new ConstantBackoff(50) },
  );
  return {
    _altReturn: undefined as never,
    onSuccess: inner.onSuccess,
    onFailure: inner.onFailure,
    execute: (fn, signal) => currentCall.run({ method: "" }, () => inner.execute(fn, signal)),
  };
}

/**
 * etcd3's per-endpoint policy. etcd3's default breaker opens after 3 consecutive
 * "recoverable" failures (which include RESOURCE_EXHAUSTED: NOSPACE, or one answer over
 * the receive limit) and then refuses every call to that endpoint, streams included, for
 * 5 s. With one endpoint that is 5 s in which a healthy etcd cannot be reached, longer
 * than a leader TTL (2-3 s): every campaign fails and no replica leads.
 *
 * - One endpoint: no breaker. There is nowhere else to go, and failing fast buys nothing
 *   our own retry loops do not already do with backoff.
 * - Several: open after 3 consecutive transport failures (UNAVAILABLE or
 *   DEADLINE_EXCEEDED, nothing etcd answered), so a dead or partitioned member stops
 *   costing a 2 s deadline per call; probe it again after 1 s. A healthy cluster whose
 *   every breaker opened (quorum lost, then back) is reachable again within 1 s, under
 *   the smallest leader TTL (2 s). etcd3 moves a call whose breaker is open to the next
 *   endpoint without counting it as an attempt.
 */
function hostPolicy(endpointCount: number): () => IPolicy<IDefaultPolicyContext> {
  if (endpointCount <= 1) return () => noop;
  return () =>
    circuitBreaker(
      handleWhen((e) => e instanceof GRPCUnavailableError || e instanceof GRPCDeadlineExceededError),
      { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) },
    );
}

/**
 * An etcd3 client whose unary calls carry a deadline (streams, such as watches and
 * lease keep-alives, have none: they live as long as their owner), with fault handling
 * set for our TTLs (see {@link globalRetryPolicy} and {@link hostPolicy}).
 *
 * @example
 * ```ts
 * const client = createEtcdClient(["http://127.0.0.1:2379"]);
 * try { await client.get("k").string(); } finally { client.close(); }
 * ```
 */
export function createEtcdClient(endpoints: readonly string[], security: EtcdSecurity = {}): Etcd3 {
  const client = new Etcd3({
    hosts: [...endpoints],
    // TLS (https:// endpoints verified against --etcd-ca, a client certificate with
    // --etcd-cert) and etcd's own users (--etcd-user; etcd3 trades the password for a token).
    ...security,
    grpcOptions: {
      "grpc.max_receive_message_length": etcdMaxReceiveBytes,
      "grpc.keepalive_time_ms": keepaliveTimeMs,
      "grpc.keepalive_timeout_ms": keepaliveTimeoutMs,
    },
    defaultCallOptions: (context) => {
      if (context.isStream) return {};
      const box = currentCall.getStore();
      if (box === undefined) return { deadline: Date.now() + etcdCallTimeoutMs };
      box.method = `${context.service}.${context.method}`;
      box.deadline ??= Date.now() + etcdCallTimeoutMs;
      return { deadline: box.deadline };
    },
    faultHandling: {
      global: globalRetryPolicy(),
      host: hostPolicy(endpoints.length),
      // Watches that etcd3 re-establishes itself (a campaign waiting for its predecessor's
      // key, say): first retry after 250 ms, at most every 5 s (etcd3's default grows to
      // 30 s, longer than any of our TTLs). etcd3 1.1.2 declares the cockatiel 2 type
      // (a backoff state) but calls `.next()` on it first, which a cockatiel 3 factory is.
      watchBackoff: new ExponentialBackoff({
        initialDelay: 250,
        maxDelay: 5000,
      }) as unknown as IBackoff<unknown>,
    },
  });
  requireLeaderOnWatches(client);
  return client;
}

/**
 * gRPC metadata that asks an etcd member to refuse a stream, or to cancel an open one, when
 * it has no raft leader (Go's `clientv3.WithRequireLeader`; etcd's key `hasleader`). A
 * member cut off from the others keeps its streams open and silent: a watch on it never
 * sees another event, so a campaign waiting there for its predecessor's key to go waited
 * until the cut healed (the `net-etcd-leader-cut` drill: 6 s without a leader, workers
 * fenced). With it, the member cancels the stream after 3 election timeouts without a
 * leader (etcd's `monitorLeader`), and etcd3 re-creates the watch, from the last revision
 * it saw, on another endpoint. Unary calls do not carry it: a brief election would fail
 * them at once instead of letting them wait within their deadline.
 */
function withRequireLeader(metadata: unknown): Metadata {
  // etcd3's metadata carries its auth token: keep it (a copy: etcd3 caches and reuses it).
  const md = metadata instanceof Metadata ? metadata.clone() : new Metadata();
  md.set("hasleader", "true");
  return md;
}

/** Makes every watch stream of `client` carry {@link withRequireLeader}. */
function requireLeaderOnWatches(client: Etcd3): void {
  const pool = (client as unknown as { pool: Pick<PoolInternals, "withConnection"> }).pool;
  const inner = pool.withConnection.bind(pool);
  pool.withConnection = (service, fn, hosts) =>
    inner(
      service,
      service === "Watch" ? (c) => fn({ ...c, metadata: withRequireLeader(c.metadata) }) : fn,
      hosts,
    );
}

/**
 * The raw Lease service of a client. etcd3's `Lease` class opens one keep-alive stream per
 * lease and cannot adopt a lease another process granted; the coordinator needs both (a
 * new leader keeps alive the member leases its predecessor granted, over one stream for
 * all of them). etcd3 1.1.2 keeps its connection pool in the internal `pool` field; the
 * dependency is pinned to that version.
 */
export function rawLeaseClient(client: Etcd3): LeaseClient {
  const pool = (client as unknown as { pool: ICallable<unknown> }).pool;
  return new LeaseClient(pool);
}

/** The parts of etcd3 1.1.2's internal connection pool that {@link openLeaseKeepAlive} uses. */
interface PoolInternals {
  readonly hosts: readonly object[];
  withConnection<T>(
    service: string,
    fn: (c: { resource: object; client: RawLeaseService; metadata: unknown }) => T,
    hosts?: Iterator<object>,
  ): Promise<T>;
  markFailed(resource: object, error: Error): void;
}

/** The grpc-js Lease service client etcd3 hands to `withConnection`, the calls we make on it. */
interface RawLeaseService {
  leaseKeepAlive(metadata: unknown, options: object): LeaseKeepAliveStream;
  leaseRevoke(
    req: { ID: string },
    metadata: unknown,
    options: { deadline: number },
    cb: (err: Error | null) => void,
  ): void;
}

/** A lease keep-alive stream, as etcd3 types it. */
export type LeaseKeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/**
 * Opens a lease keep-alive stream like etcd3's `leaseKeepAlive`, on a host other than `avoid`
 * when there is one (tried last). etcd3 picks hosts at random and knows nothing of a stream
 * that stalls on a half-open connection to a partitioned member: without this, a replaced
 * stream lands on the same dead host one time in three. Returns the host with the stream, to
 * be avoided next time if it stalls.
 */
export function openLeaseKeepAlive(
  client: Etcd3,
  avoid?: object,
): Promise<{ stream: LeaseKeepAliveStream; host: object }> {
  const pool = (client as unknown as { pool: PoolInternals }).pool;
  function* order(): Generator<object> {
    for (;;) {
      const others = pool.hosts.filter((h) => h !== avoid);
      for (let i = others.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [others[i], others[j]] = [others[j] as object, others[i] as object];
      }
      yield* others;
      if (avoid !== undefined && pool.hosts.includes(avoid)) yield avoid;
    }
  }
  return pool.withConnection(
    "Lease",
    ({ resource, client: lease, metadata }) => {
      // Required leader: a member cut off from the others cancels the stream (see
      // withRequireLeader) instead of leaving it to the keeper's stall check alone.
      const stream = lease.leaseKeepAlive(withRequireLeader(metadata), {});
      // As etcd3 does: an error on a live stream counts against the host's breaker.
      stream.on("error", (err: Error) => {
        if ((stream as unknown as { writable: boolean }).writable) pool.markFailed(resource, err);
      });
      return { stream, host: resource };
    },
    order(),
  );
}

/**
 * Revokes `leaseId` through every endpoint at once and resolves at the first that answers
 * (a lease already gone counts as revoked); rejects when none did within the deadline (with
 * the first endpoint's failure). A resign goes this way because it is the one call whose
 * delay everyone else waits for: the next candidate leads only once the lease's key is gone.
 * One call to a random endpoint can land on a member cut off from the others and wait its
 * whole 2 s deadline, after which nothing retries it (a timed-out call is not retried), and
 * the key stays for the rest of its TTL. Revoking twice does nothing more than once.
 */
export async function revokeEverywhere(client: Etcd3, leaseId: string): Promise<void> {
  const pool = (client as unknown as { pool: PoolInternals }).pool;
  const deadline = Date.now() + etcdCallTimeoutMs;
  const attempts = pool.hosts.map((host) =>
    pool.withConnection(
      "Lease",
      ({ client: lease, metadata }) =>
        new Promise<void>((resolve, reject) => {
          lease.leaseRevoke({ ID: leaseId }, metadata, { deadline }, (err) => {
            if (err === null || /requested lease not found/.test(err.message)) resolve();
            else reject(err);
          });
        }),
      // etcd3 takes the next host from this iterator for each of its attempts: always this
      // one (with its breaker open, the call fails with BrokenCircuitError, not a TypeError).
      (function* only() {
        for (;;) yield host;
      })(),
    ),
  );
  try {
    await Promise.any(attempts);
  } catch (e) {
    throw e instanceof AggregateError ? e.errors[0] : e;
  }
}
