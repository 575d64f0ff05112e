/** Where the coordinator placed a task. */
export type TaskPlacementName = "shard" | "balanced";

/** A task attempt handed to a {@link TaskHandler}. */
export interface Task {
  /** Unique within the group. */
  readonly id: string;
  /** The attempt number, from 1 (one more with each dispatch of the same task). */
  readonly attempt: number;
  /** The task's input, as submitted. */
  readonly payload: Uint8Array;
  /** 1 (highest) to 5. */
  readonly priority: number;
  readonly placement: TaskPlacementName;
  /** The task's shard with `placement: "shard"` (its handler stops when the shard is lost). */
  readonly shardId: number | undefined;
  /** Dispatches allowed in all, this one included. */
  readonly maxAttempts: number;
  /** The attempt's execution timeout in ms (0: none). */
  readonly timeoutMs: number;
  /** The epoch of the leader that dispatched this attempt. */
  readonly leaderEpoch: number;
  /** When the task was submitted, in Unix ms. */
  readonly createdAtMs: number;
  /**
   * Aborts when the attempt must stop: cancel, timeout, self-fence, shard loss, close. Its
   * `reason` is a `TaskError` naming which. The same signal is the handler's second argument.
   */
  readonly signal: AbortSignal;
  /**
   * Whether this attempt may still run, checked now: its signal has not aborted and the
   * session's self-fence holds (when it ran out, every task's signal aborts before this
   * returns false). Call it before each step with side effects: after the process was
   * paused (SIGSTOP, a long GC, a suspended VM), a timer of yours may fire before the SDK's
   * periodic check has aborted the signal, while the leader may already have given the task
   * to another worker.
   */
  valid(): boolean;
  /**
   * Reports progress: `fraction` from 0 to 1 and an optional note. Cheap to call often: the
   * latest value is sent at most every 50 ms.
   */
  progress(fraction: number, message?: string): void;
}

/**
 * Runs one task attempt. A returned `Uint8Array` or string (UTF-8) is the result (nothing
 * returned: an empty one) and the task succeeds; a thrown error fails the attempt (a
 * `TaskError` with `retryable: false` fails the task for good); once `signal` aborted, a
 * thrown error reports the attempt cancelled. Return promptly after the signal aborts: the
 * slot stays taken until you do.
 *
 * @example
 * ```ts
 * const handler: TaskHandler = async (task, signal) => {
 *   for (const page of pagesOf(task.payload)) {
 *     if (!task.valid()) throw signal.reason; // cancelled, timed out, fenced...
 *     await render(page, { signal });
 *     task.progress(page.index / page.count);
 *   }
 *   return "rendered";
 * };
 * await worker.runTasks(handler);
 * ```
 */
export type TaskHandler = (
  task: Task,
  signal: AbortSignal,
  // biome-ignore lint/suspicious/noConfusingVoidType: an async handler without a return statement has type Promise<void>
) => Promise<Uint8Array | string | undefined | void>;
