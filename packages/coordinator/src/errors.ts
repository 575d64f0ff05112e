/**
 * Why a coordinator operation failed, as a stable code (never parse messages).
 *
 * - `invalid_config`: settings are missing, malformed or inconsistent.
 * - `deposed`: a fenced write found our election key gone or re-created; we are not the leader.
 * - `etcd_unavailable`: etcd did not answer in time, or could not be reached; retry with backoff.
 * - `etcd_nospace`: etcd refused a write with its NOSPACE alarm (backend quota reached); writes
 *   fail until an operator compacts, defragments and disarms the alarm (see the README).
 * - `etcd_auth`: etcd refused our credentials or permissions.
 * - `etcd_failed`: any other etcd failure (a request or answer too large, a compacted revision, ...).
 * - `invalid_data`: a record read from etcd does not have the expected shape.
 * - `closed`: the object was closed.
 * - `leader_unavailable`: no leader is elected, or its console cannot be read (CLI).
 * - `not_found`: a named thing (a group) does not exist (CLI).
 */
export type CoordinatorErrorCode =
  | "invalid_config"
  | "deposed"
  | "etcd_unavailable"
  | "etcd_nospace"
  | "etcd_auth"
  | "etcd_failed"
  | "invalid_data"
  | "closed"
  | "leader_unavailable"
  | "not_found"
  | "not_leader";

/**
 * The one error class of the coordinator package: a code, a message and an optional cause.
 *
 * @example
 * ```ts
 * try { await store.commit(ops); }
 * catch (e) { if (CoordinatorError.from(e).code === "deposed") stepDown(); }
 * ```
 */
export class CoordinatorError extends Error {
  override name = "CoordinatorError";
  readonly code: CoordinatorErrorCode;

  constructor(code: CoordinatorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Wraps anything thrown into a CoordinatorError, keeping one that already is. */
  static from(reason: unknown, code: CoordinatorErrorCode = "etcd_unavailable"): CoordinatorError {
    if (reason instanceof CoordinatorError) return reason;
    const message = reason instanceof Error ? reason.message : String(reason);
    return new CoordinatorError(code, message, { cause: reason });
  }
}
