import { CoordinatorError } from "../errors.js";

/**
 * Settings of the task subsystem, every field resolved (see {@link resolveTaskOptions}).
 * The replica exposes the first three as flags: `--max-task-bytes`, `--max-queued-tasks`,
 * `--task-retention`.
 */
export interface TaskOptions {
  /** Largest payload, and largest result, of one task in bytes (`--max-task-bytes`). @default 65536 */
  readonly maxTaskBytes: number;
  /** Unfinished tasks one group may hold; a submit beyond gets RESOURCE_EXHAUSTED (`--max-queued-tasks`). @default 100000 */
  readonly maxQueuedTasks: number;
  /** How long a finished task's record stays in etcd, in ms (`--task-retention`). @default 3600000 */
  readonly taskRetentionMs: number;
  /** Tasks one SubmitTasks call may carry. @default 1000 */
  readonly maxTasksPerSubmit: number;
  /** max_attempts of a task that gives none. @default 3 */
  readonly defaultMaxAttempts: number;
  /** How long a write waits for others to share its transaction, in ms. @default 2 */
  readonly writeLingerMs: number;
  /** Operations in one etcd transaction (etcd's `--max-txn-ops`). @default 128 */
  readonly maxTxnOps: number;
  /**
   * Bytes of keys and values in one transaction; kept under etcd's `--max-request-bytes`
   * (1.5 MiB by default) with room for the request's own framing. @default 1441792 (1.375 MiB)
   */
  readonly maxTxnBytes: number;
  /** Transactions in flight at once (writes to one key never overlap). @default 4 */
  readonly maxTxnsInFlight: number;
  /** Changes kept per group so a watcher can resume from its cursor without a snapshot. @default 10000 */
  readonly watchBacklog: number;
  /** Changes buffered for one slow watcher before its stream ends with ABORTED (it resumes). @default 10000 */
  readonly watchBufferLimit: number;
  /** Finished tasks kept in the leader's memory per group (older ones are read from etcd). @default 10000 */
  readonly recentFinished: number;
}

/** What a caller may pass: every field optional. */
export type TaskOptionsInput = { [K in keyof TaskOptions]?: TaskOptions[K] | string | undefined };

export const defaultTaskOptions: TaskOptions = {
  maxTaskBytes: 64 * 1024,
  maxQueuedTasks: 100_000,
  taskRetentionMs: 3_600_000,
  maxTasksPerSubmit: 1000,
  defaultMaxAttempts: 3,
  writeLingerMs: 2,
  maxTxnOps: 128,
  maxTxnBytes: 1_441_792,
  maxTxnsInFlight: 4,
  watchBacklog: 10_000,
  watchBufferLimit: 10_000,
  recentFinished: 10_000,
};

const flags: Record<keyof TaskOptions, string> = {
  maxTaskBytes: "max-task-bytes",
  maxQueuedTasks: "max-queued-tasks",
  taskRetentionMs: "task-retention",
  maxTasksPerSubmit: "max-tasks-per-submit",
  defaultMaxAttempts: "default-max-attempts",
  writeLingerMs: "task-write-linger",
  maxTxnOps: "max-txn-ops",
  maxTxnBytes: "max-txn-bytes",
  maxTxnsInFlight: "max-txns-in-flight",
  watchBacklog: "task-watch-backlog",
  watchBufferLimit: "task-watch-buffer",
  recentFinished: "recent-finished-tasks",
};

// A task (payload beside its record, result inside it as base64) must always fit one
// transaction, so the largest task is bounded by the transaction budget.
const bounds: Record<keyof TaskOptions, readonly [number, number]> = {
  maxTaskBytes: [1, 512 * 1024],
  maxQueuedTasks: [1, 10_000_000],
  taskRetentionMs: [1000, 30 * 86_400_000],
  maxTasksPerSubmit: [1, 10_000],
  defaultMaxAttempts: [1, 100],
  writeLingerMs: [0, 1000],
  maxTxnOps: [4, 10_000],
  maxTxnBytes: [1024 * 1024, 64 * 1024 * 1024],
  maxTxnsInFlight: [1, 64],
  watchBacklog: [0, 10_000_000],
  watchBufferLimit: [1, 10_000_000],
  recentFinished: [0, 10_000_000],
};

/**
 * Resolves and checks task settings once. Throws `CoordinatorError("invalid_config")`
 * naming the flag.
 *
 * @example
 * ```ts
 * const o = resolveTaskOptions({ maxTaskBytes: 128 * 1024, taskRetentionMs: "600000" });
 * ```
 */
export function resolveTaskOptions(input: TaskOptionsInput = {}): TaskOptions {
  const out: Record<string, number> = {};
  for (const k of Object.keys(defaultTaskOptions) as (keyof TaskOptions)[]) {
    const raw = input[k] ?? defaultTaskOptions[k];
    const n = typeof raw === "number" ? raw : Number(String(raw).trim());
    const [min, max] = bounds[k];
    if (!Number.isInteger(n) || n < min || n > max)
      throw new CoordinatorError(
        "invalid_config",
        `--${flags[k]} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`,
      );
    out[k] = n;
  }
  const o = out as unknown as TaskOptions;
  if (o.maxTaskBytes * 3 + 64 * 1024 > o.maxTxnBytes)
    throw new CoordinatorError(
      "invalid_config",
      `--max-task-bytes (${o.maxTaskBytes}) must leave room for a whole task in one transaction of --max-txn-bytes (${o.maxTxnBytes})`,
    );
  return o;
}
