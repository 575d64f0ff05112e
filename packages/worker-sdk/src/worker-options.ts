import { type BackoffOptions, defaultBackoff } from "./backoff.js";
import type { DataCompression } from "./compression.js";
import { WorkerError } from "./errors.js";
import type { StabilityWindow } from "./ownership.js";
import {
  type ResolvedTransportSecurity,
  resolveTransportSecurity,
  type TransportSecurityOptions,
} from "./transport-security.js";
import type { WorkerMetricsHook } from "./worker-metrics.js";

/** Options of {@link connectWorker}. */
export interface WorkerOptions extends TransportSecurityOptions {
  /** Any coordinator replicas, as `host:port` (or `http://host:port`); the SDK finds the leader. */
  readonly coordinators: readonly string[];
  /** The worker group: 1-128 characters of `[A-Za-z0-9._:-]`. */
  readonly group: string;
  /** This worker's id, stable across restarts (a quick restart then causes no rebalance). Same charset. */
  readonly nodeId: string;
  /** Relative capacity: the member's weight under the `sticky` strategy (ignored under `modulo`). @default 1 */
  readonly capacity?: number;
  /** Free-form labels stored in the member record. @default {} */
  readonly labels?: Readonly<Record<string, string>>;
  /** Aborting it closes the worker (like `close()`). */
  readonly signal?: AbortSignal;
  /** Your own load figure, sent with every heartbeat. */
  readonly load?: () => number;
  /**
   * Start a new version's gained shards only after it stayed active for N heartbeats or T ms.
   * Worth it under `modulo`, where every membership change restarts every shard. @default none
   */
  readonly stabilityWindow?: Partial<StabilityWindow>;
  /** How long a shard handler may take to return after its signal aborts, in ms. @default 10000 */
  readonly stopTimeoutMs?: number;
  /**
   * Reconnect backoff (full jitter). While the session still holds (a failover in progress),
   * the cap is at most half the heartbeat interval. @default { baseMs: 50, capMs: 500 }
   */
  readonly backoff?: Partial<BackoffOptions>;
  /**
   * How long connectWorker keeps trying for the first Welcome, in ms; the error then names the
   * last cause per replica. Refusals retrying cannot fix reject at once. @default 30000
   */
  readonly connectTimeoutMs?: number;
  /** HTTP/2 PING interval on the connection, in ms. @default 10000 */
  readonly pingIntervalMs?: number;
  /**
   * Compression of {@link Worker.fetchShardData} (the request goes with `grpc-encoding: gzip`,
   * so the coordinator gzips the records it streams back). Heartbeats are never compressed.
   * Worth it for text-like payloads on a slow network; see docs/data.md. @default "none"
   */
  readonly compression?: DataCompression;
  /** Called with one object per event (for logs); never throws into the SDK. */
  readonly onLog?: (entry: Readonly<Record<string, unknown>>) => void;
  /**
   * Called with each measurement (connects, disconnects by code, running shards, the view's
   * version, tasks, heartbeat ack latency): see {@link WorkerMetric} for the names, and
   * docs/operations.md for a prom-client adapter. @default none
   */
  readonly metrics?: WorkerMetricsHook;
}

export interface ResolvedWorkerOptions {
  readonly coordinators: readonly string[];
  readonly group: string;
  readonly nodeId: string;
  readonly capacity: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly signal: AbortSignal | undefined;
  readonly load: (() => number) | undefined;
  readonly stabilityWindow: StabilityWindow;
  readonly stopTimeoutMs: number;
  readonly backoff: BackoffOptions;
  readonly connectTimeoutMs: number;
  readonly pingIntervalMs: number;
  readonly compression: DataCompression;
  readonly onLog: (entry: Readonly<Record<string, unknown>>) => void;
  readonly metrics: WorkerMetricsHook | undefined;
  /** TLS and token (see {@link TransportSecurityOptions}). */
  readonly security: ResolvedTransportSecurity;
}

const namePattern = /^[A-Za-z0-9._:-]{1,128}$/;

function positive(name: string, v: number | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min)
    throw new WorkerError("invalid_options", `${name} must be a number >= ${min}, got ${v}`);
  return v;
}

function compressionOption(v: DataCompression | undefined): DataCompression {
  if (v === undefined || v === "none" || v === "gzip") return v ?? "none";
  throw new WorkerError("invalid_options", `compression must be "none" or "gzip", got ${JSON.stringify(v)}`);
}

/** Checks and completes options once, so nothing later sees a partial configuration. */
export function resolveWorkerOptions(o: WorkerOptions): ResolvedWorkerOptions {
  if (!Array.isArray(o.coordinators) || o.coordinators.length === 0) {
    throw new WorkerError("invalid_options", "coordinators must list at least one host:port");
  }
  const coordinators = o.coordinators.map((c) => {
    const hp = c.replace(/^https?:\/\//, "").replace(/\/+$/, "");
    if (!/^[^\s/:]+:\d{1,5}$/.test(hp) && !/^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(hp)) {
      throw new WorkerError("invalid_options", `coordinator ${JSON.stringify(c)} is not host:port`);
    }
    return hp;
  });
  if (!namePattern.test(o.group))
    throw new WorkerError(
      "invalid_options",
      `group ${JSON.stringify(o.group)} must be 1-128 characters of [A-Za-z0-9._:-]`,
    );
  if (!namePattern.test(o.nodeId))
    throw new WorkerError(
      "invalid_options",
      `nodeId ${JSON.stringify(o.nodeId)} must be 1-128 characters of [A-Za-z0-9._:-]`,
    );
  const capacity = positive("capacity", o.capacity, 1, 1);
  if (!Number.isInteger(capacity))
    throw new WorkerError("invalid_options", `capacity must be an integer, got ${capacity}`);
  return {
    coordinators,
    group: o.group,
    nodeId: o.nodeId,
    capacity,
    labels: { ...(o.labels ?? {}) },
    signal: o.signal,
    load: o.load,
    stabilityWindow: {
      heartbeats: positive("stabilityWindow.heartbeats", o.stabilityWindow?.heartbeats, 0),
      ms: positive("stabilityWindow.ms", o.stabilityWindow?.ms, 0),
    },
    stopTimeoutMs: positive("stopTimeoutMs", o.stopTimeoutMs, 10_000),
    backoff: {
      baseMs: positive("backoff.baseMs", o.backoff?.baseMs, defaultBackoff.baseMs, 1),
      capMs: positive("backoff.capMs", o.backoff?.capMs, defaultBackoff.capMs, 1),
    },
    connectTimeoutMs: positive("connectTimeoutMs", o.connectTimeoutMs, 30_000, 1),
    pingIntervalMs: positive("pingIntervalMs", o.pingIntervalMs, 10_000, 1000),
    compression: compressionOption(o.compression),
    onLog: o.onLog ?? (() => undefined),
    metrics: o.metrics,
    security: resolveTransportSecurity(o),
  };
}
