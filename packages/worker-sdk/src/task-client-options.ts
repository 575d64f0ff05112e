import { type BackoffOptions, defaultBackoff } from "./backoff.js";
import { TaskClientError } from "./task-client-error.js";
import {
  type ResolvedTransportSecurity,
  resolveTransportSecurity,
  type TransportSecurityOptions,
} from "./transport-security.js";

/** Options of {@link createTaskClient}. */
export interface TaskClientOptions extends TransportSecurityOptions {
  /** Any coordinator replicas, as `host:port` (or `http://host:port`); the client finds the leader. */
  readonly coordinators: readonly string[];
  /** Aborting it closes the client (like `close()`). */
  readonly signal?: AbortSignal;
  /** How long one operation may take, retries and leader changes included, in ms. @default 30000 */
  readonly callTimeoutMs?: number;
  /** How long one attempt of a unary call may take before it is retried elsewhere, in ms. @default 10000 */
  readonly attemptTimeoutMs?: number;
  /** Backoff between attempts when no leader is reachable (full jitter). @default { baseMs: 50, capMs: 500 } */
  readonly backoff?: Partial<BackoffOptions>;
  /**
   * Largest SubmitTasks request, in bytes (payloads, ids and framing, estimated); larger
   * batches are split. Keep it under the coordinators' `--max-message-bytes`. @default 60000
   */
  readonly maxRequestBytes?: number;
  /** Tasks per SubmitTasks request; larger batches are split. @default 500 */
  readonly maxTasksPerRequest?: number;
  /** SubmitTasks requests in flight at once for one large batch. @default 4 */
  readonly submitConcurrency?: number;
  /** Called with one object per event (for logs); never throws into the client. */
  readonly onLog?: (entry: Readonly<Record<string, unknown>>) => void;
}

export interface ResolvedTaskClientOptions {
  readonly coordinators: readonly string[];
  readonly signal: AbortSignal | undefined;
  readonly callTimeoutMs: number;
  readonly attemptTimeoutMs: number;
  readonly backoff: BackoffOptions;
  readonly maxRequestBytes: number;
  readonly maxTasksPerRequest: number;
  readonly submitConcurrency: number;
  readonly onLog: (entry: Readonly<Record<string, unknown>>) => void;
  readonly security: ResolvedTransportSecurity;
}

function num(name: string, v: number | undefined, dflt: number, min: number, integer = true): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v)))
    throw new TaskClientError(
      "invalid_argument",
      `${name} must be ${integer ? "an integer" : "a number"} >= ${min}, got ${v}`,
    );
  return v;
}

/** Checks and completes options once. */
export function resolveTaskClientOptions(o: TaskClientOptions): ResolvedTaskClientOptions {
  if (!Array.isArray(o.coordinators) || o.coordinators.length === 0)
    throw new TaskClientError("invalid_argument", "coordinators must list at least one host:port");
  const coordinators = o.coordinators.map((c) => {
    const hp = c.replace(/^https?:\/\//, "").replace(/\/+$/, "");
    if (!/^[^\s/:]+:\d{1,5}$/.test(hp) && !/^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(hp))
      throw new TaskClientError("invalid_argument", `coordinator ${JSON.stringify(c)} is not host:port`);
    return hp;
  });
  return {
    coordinators,
    signal: o.signal,
    callTimeoutMs: num("callTimeoutMs", o.callTimeoutMs, 30_000, 1),
    attemptTimeoutMs: num("attemptTimeoutMs", o.attemptTimeoutMs, 10_000, 1),
    backoff: {
      baseMs: num("backoff.baseMs", o.backoff?.baseMs, defaultBackoff.baseMs, 1, false),
      capMs: num("backoff.capMs", o.backoff?.capMs, defaultBackoff.capMs, 1, false),
    },
    maxRequestBytes: num("maxRequestBytes", o.maxRequestBytes, 60_000, 1024),
    maxTasksPerRequest: num("maxTasksPerRequest", o.maxTasksPerRequest, 500, 1),
    submitConcurrency: num("submitConcurrency", o.submitConcurrency, 4, 1),
    onLog: o.onLog ?? (() => undefined),
    security: (() => {
      try {
        return resolveTransportSecurity(o);
      } catch (e) {
        throw new TaskClientError("invalid_argument", (e as Error).message);
      }
    })(),
  };
}
