/**
 * Why a task attempt ended without a result, as a stable code.
 *
 * Thrown by your handler:
 * - `failed`: the attempt failed; with `retryable: false` the task fails for good, otherwise
 *   the coordinator retries it (up to its `maxAttempts`).
 *
 * The reason of a handler's aborted `signal` (`signal.reason`), set by the SDK:
 * - `cancelled`: a client cancelled the task (CANCEL_TASK from the leader);
 * - `timeout`: the attempt ran past its `timeoutMs` (counted here from its arrival, and by
 *   the leader from its dispatch);
 * - `fenced`: the session's self-fence ran out (the leader may consider this worker gone);
 * - `new_incarnation`: the leader did not recognise our session: everything stops;
 * - `shard_lost`: the task's shard (`placement: "shard"`) is no longer owned here;
 * - `closed`: the worker is closing.
 *
 * An attempt that ends because its signal aborted is reported `cancelled`; the coordinator
 * finishes the task as cancelled when a client asked for it, and otherwise retries it.
 */
export type TaskErrorCode =
  | "failed"
  | "cancelled"
  | "timeout"
  | "fenced"
  | "new_incarnation"
  | "shard_lost"
  | "closed";

/**
 * A task attempt's error: thrown by a handler to say whether retrying can help, and the
 * reason a handler's signal aborts.
 *
 * @example
 * ```ts
 * await worker.runTasks(async (task) => {
 *   const order = JSON.parse(new TextDecoder().decode(task.payload));
 *   if (order.amount < 0) throw new TaskError("failed", "negative amount", { retryable: false });
 *   return await charge(order, task.signal);
 * });
 * ```
 */
export class TaskError extends Error {
  override name = "TaskError";
  readonly code: TaskErrorCode;
  /** Whether another attempt could succeed (reported with `failed`). */
  readonly retryable: boolean;

  constructor(code: TaskErrorCode, message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? true;
  }

  /** `reason` as a TaskError: itself, or `failed` (retryable) with its message. */
  static from(reason: unknown): TaskError {
    if (reason instanceof TaskError) return reason;
    return new TaskError("failed", reason instanceof Error ? reason.message : String(reason), {
      cause: reason,
    });
  }
}
