import type { TaskPlacementName, TaskStateName, TaskView } from "./task-record.js";

/** One task of a SubmitTasks call, checked by the service (sizes, ids, ranges). */
export interface TaskSubmission {
  /** Undefined: the host generates one. */
  readonly id: string | undefined;
  readonly payload: Uint8Array;
  readonly placement: TaskPlacementName;
  /** Empty with `shard` placement. */
  readonly selector: Readonly<Record<string, string>>;
  /** 1 (highest) to 5. */
  readonly priority: number;
  /** 1 to 100. */
  readonly maxAttempts: number;
  /** 0: none. */
  readonly timeoutMs: number;
}

/** One submitted task's outcome. */
export interface SubmitOutcome {
  readonly task: TaskView;
  /** False when the task existed already with the same payload. */
  readonly created: boolean;
}

/** A page of ListTasks. */
export interface TaskListPage {
  readonly tasks: readonly TaskView[];
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

/** A message of WatchTasks. */
export interface WatchBatch {
  readonly tasks: readonly TaskView[];
  readonly cursor: string;
  /** True on the message that completes the snapshot (or the replay) . */
  readonly synced: boolean;
}

/**
 * What the leader provides to the task service: submit, read, cancel and follow the tasks
 * in its queue and store. Every method may throw `TaskError` (its code becomes the gRPC
 * status) or `CoordinatorError` (`deposed`, `etcd_unavailable`, `closed`: UNAVAILABLE).
 * Arguments have passed the service's checks: names and ids are valid, sizes within
 * limits, batches non-empty with distinct ids.
 */
export interface TaskHost {
  /**
   * Stores new tasks durably (the etcd commit happened before it resolves) and returns
   * one outcome per submission, in order. A known id with the same payload (sha256) is
   * returned as it stands; with another payload the whole call fails `already_exists`
   * before anything is stored. A group that would exceed `--max-queued-tasks` fails
   * `resource_exhausted`.
   */
  submit(group: string, tasks: readonly TaskSubmission[], signal: AbortSignal): Promise<SubmitOutcome[]>;
  /** The task as it stands; `not_found` when the group has none with that id. */
  get(group: string, id: string, signal: AbortSignal): Promise<TaskView>;
  /**
   * Tasks ascending by id, optionally of one state, from `pageToken` ("" for the first
   * page); at most `pageSize`, possibly fewer even when more follow. A malformed token is
   * `invalid_argument`.
   */
  list(
    group: string,
    o: { readonly state: TaskStateName | undefined; readonly pageSize: number; readonly pageToken: string },
    signal: AbortSignal,
  ): Promise<TaskListPage>;
  /**
   * Cancels a task: a queued one becomes `cancelled` (durably) at once; a dispatched or
   * running one is marked `cancelRequested` (durably) and its worker is told to stop.
   * `not_found` for an unknown id, `failed_precondition` for a succeeded or failed task.
   */
  cancel(group: string, id: string, reason: string, signal: AbortSignal): Promise<TaskView>;
  /**
   * State changes of the tasks `ids` (all of the group's when empty), ending when `signal`
   * aborts. Without a usable `cursor` the first messages are a snapshot (for `ids`: each
   * that exists; for a group: every unfinished task, and when the cursor names an etcd
   * revision, every task changed after it), the last one `synced`; with one, the changes
   * after it, the first message `synced`. Ends with `aborted` when the watcher falls too
   * far behind, and with `unavailable` when this replica stops leading.
   */
  watch(
    group: string,
    o: { readonly ids: readonly string[]; readonly cursor: string },
    signal: AbortSignal,
  ): AsyncIterable<WatchBatch>;
}

/**
 * Who serves TaskService right now: the host while this replica leads, else the leader's
 * advertised address (empty when unknown) for the `x-shard-leader` refusal.
 */
export type TaskHostRoute = { readonly host: TaskHost } | { readonly leader: string };
