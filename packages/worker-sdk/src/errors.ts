/**
 * Why a worker operation failed, as a stable code.
 *
 * - `invalid_options`: connectWorker was given bad options.
 * - `closed`: the worker was closed (or its signal aborted).
 * - `not_owner`: the shard is not owned by this worker in an active version (FetchShardData).
 * - `refused`: the coordinator refused the worker for good (invalid group/node id, duplicate node id).
 * - `unavailable`: no coordinator could be reached in time.
 */
export type WorkerErrorCode = "invalid_options" | "closed" | "not_owner" | "refused" | "unavailable";

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
