/**
 * Why a task operation was refused, as a stable code. The task service maps each to one
 * gRPC status; nothing ever parses the message.
 *
 * - `invalid_argument`: the request is malformed (bad id, priority, selector, sizes...).
 * - `not_found`: the group has no task with that id.
 * - `already_exists`: the id is taken by a task with a different payload.
 * - `resource_exhausted`: the group's queue is full, or a payload or result is too large.
 * - `failed_precondition`: the task is in a state that forbids the operation (cancelling
 *   a task that already succeeded).
 * - `aborted`: a watcher fell too far behind; it resumes from its cursor.
 * - `unavailable`: this replica cannot serve it now (not the leader, deposed, etcd down,
 *   closing); the caller retries, at the leader.
 */
export type TaskErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "resource_exhausted"
  | "failed_precondition"
  | "aborted"
  | "unavailable";

/**
 * The error class of the task subsystem: a code, a message and an optional cause.
 *
 * @example
 * ```ts
 * if (queue.unfinished + n > max)
 *   throw new TaskError("resource_exhausted", `group ${group} holds ${max} unfinished tasks`);
 * ```
 */
export class TaskError extends Error {
  override name = "TaskError";
  readonly code: TaskErrorCode;

  constructor(code: TaskErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Keeps a TaskError, wraps anything else with `code`. */
  static from(reason: unknown, code: TaskErrorCode = "unavailable"): TaskError {
    if (reason instanceof TaskError) return reason;
    const message = reason instanceof Error ? reason.message : String(reason);
    return new TaskError(code, message, { cause: reason });
  }
}
