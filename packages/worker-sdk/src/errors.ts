/**
 * Why a worker operation failed, as a stable code.
 *
 * Raised by `connectWorker` (and then ending the worker, see `worker.closed()`), for refusals
 * that retrying cannot fix:
 * - `already_exists`: another live process holds this node id in the group (before the first
 *   Welcome: a duplicate deployment; after it: another process took the node id over, and this
 *   worker stopped every handler and closed);
 * - `invalid_argument`: the coordinator rejected the group or node id;
 * - `unauthenticated`: the coordinator wants credentials we did not give, or refused them
 *   (a missing, wrong or revoked token; UNAUTHENTICATED);
 * - `permission_denied`: our credentials are valid but do not allow this group, node id or
 *   call (PERMISSION_DENIED);
 * - `tls_failed`: the TLS handshake failed: the replica's certificate is not trusted (unknown
 *   CA, wrong name, expired), the replica refused our client certificate (or its absence), or
 *   one side speaks TLS and the other plaintext. The message carries Node's reason;
 * - `not_coordinator`: a configured address is not a shard coordinator: it does not speak
 *   HTTP/2 (e.g. the replica's HTTP port, any HTTP/1.1 server) or serves no ShardService;
 * - `unavailable`: no coordinator welcomed us within `connectTimeoutMs` (the message names the
 *   last cause seen per replica).
 *
 * Elsewhere:
 * - `invalid_options`: connectWorker was given bad options (or runShards called twice);
 * - `closed`: the worker was closed (or its signal aborted);
 * - `not_owner`: the shard is not owned by this worker in an active version (FetchShardData);
 * - `failed_precondition`: the coordinator cannot do it as things stand (e.g. the group's data
 *   source is misconfigured: `putShardData`); retrying unchanged will not help;
 * - `unsupported_runtime`: this Node.js is older than the SDK supports (thrown at import).
 */
export type WorkerErrorCode =
  | "invalid_options"
  | "closed"
  | "not_owner"
  | "already_exists"
  | "invalid_argument"
  | "permission_denied"
  | "unauthenticated"
  | "tls_failed"
  | "not_coordinator"
  | "unavailable"
  | "failed_precondition"
  | "unsupported_runtime";

/**
 * The SDK's one error class.
 *
 * @example
 * ```ts
 * try { for await (const r of worker.fetchShardData(shard)) use(r); }
 * catch (e) { if (e instanceof WorkerError && e.code === "not_owner") return; throw e; }
 * ```
 */
export class WorkerError extends Error {
  override name = "WorkerError";
  readonly code: WorkerErrorCode;

  constructor(code: WorkerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  static from(reason: unknown, code: WorkerErrorCode = "unavailable"): WorkerError {
    if (reason instanceof WorkerError) return reason;
    return new WorkerError(code, reason instanceof Error ? reason.message : String(reason), {
      cause: reason,
    });
  }
}
