/**
 * Why a task client call failed, as a stable code (the gRPC status it came with, or the
 * client's own reason).
 *
 * - `invalid_argument`: a malformed request (bad group or id, priority out of range...).
 * - `not_found`: the group has no task with that id.
 * - `already_exists`: the id is taken by a task with a different payload.
 * - `resource_exhausted`: the group's queue is full, or a payload is too large.
 * - `failed_precondition`: the task's state forbids it (cancelling a succeeded task).
 * - `unavailable`: no leader answered before the call's deadline.
 * - `unauthenticated`: the coordinator wants credentials (a token or a client certificate) we
 *   did not give, or refused them (a wrong or revoked token).
 * - `permission_denied`: our credentials do not allow task calls in this group (the `submit`
 *   right: a `submit` or `admin` token, a `shard-submit://<group>` certificate).
 * - `tls_failed`: the TLS handshake failed (untrusted certificate, TLS on one side only).
 * - `closed`: the client was closed, or the caller's signal aborted.
 * - `internal`: anything else the coordinator reported.
 */
export type TaskClientErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "resource_exhausted"
  | "failed_precondition"
  | "unavailable"
  | "unauthenticated"
  | "permission_denied"
  | "tls_failed"
  | "closed"
  | "internal";

/**
 * The task client's error class.
 *
 * @example
 * ```ts
 * try { await tasks.submit("billing", { id: "invoice-7", payload }); }
 * catch (e) { if (e instanceof TaskClientError && e.code === "already_exists") reportConflict(); else throw e; }
 * ```
 */
export class TaskClientError extends Error {
  override name = "TaskClientError";
  readonly code: TaskClientErrorCode;

  constructor(code: TaskClientErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  static from(reason: unknown, code: TaskClientErrorCode = "internal"): TaskClientError {
    if (reason instanceof TaskClientError) return reason;
    return new TaskClientError(code, reason instanceof Error ? reason.message : String(reason), {
      cause: reason,
    });
  }
}
