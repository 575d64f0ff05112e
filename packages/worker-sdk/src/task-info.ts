import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type Task,
  TaskErrorReason,
  TaskPlacement,
  type TaskSpecSchema,
  TaskState as TaskStateEnum,
} from "@org/proto";
import { TaskClientError } from "./task-client-error.js";

/** Where a task stands. The last three are final. */
export type TaskState = "queued" | "dispatched" | "running" | "succeeded" | "failed" | "cancelled";

/** Whether nothing will change `state` any more. */
export function isFinalTaskState(state: TaskState): boolean {
  return state === "succeeded" || state === "failed" || state === "cancelled";
}

/** Where a task may run: the least loaded matching worker, or its shard's owner. */
export type TaskPlacementKind = "balanced" | "shard";

/** A task to submit. Everything but the payload has a default. */
export interface TaskInput {
  /**
   * Unique within the group: 1-128 characters of `[A-Za-z0-9._:-]`. Submitting an id again
   * with the same payload returns the existing task; with another payload it fails
   * `already_exists`. @default a random UUID, chosen by the client (so its retries stay idempotent)
   */
  readonly id?: string;
  /** The handler's input (a string is sent as UTF-8), at most the coordinators' `--max-task-bytes`. @default empty */
  readonly payload?: Uint8Array | string;
  /** @default "balanced" */
  readonly placement?: TaskPlacementKind;
  /** Labels a worker must carry to run it (balanced placement only). @default {} */
  readonly selector?: Readonly<Record<string, string>>;
  /** 1 (highest) to 5. @default 3 */
  readonly priority?: number;
  /** Dispatches allowed before it fails for good, 1-100. @default the coordinator's (3) */
  readonly maxAttempts?: number;
  /** Execution timeout of one attempt, in ms; the attempt is cancelled and retried or failed. @default none */
  readonly timeoutMs?: number;
}

/** Why a task (or its last attempt) failed. */
export interface TaskFailureInfo {
  readonly message: string;
  readonly reason: "handler" | "timeout" | "worker_lost" | "unknown";
  /** False when the handler said another attempt cannot succeed. */
  readonly retryable: boolean;
  readonly attempt: number;
}

/** A task as the leader knows it. */
export interface TaskInfo {
  readonly id: string;
  readonly group: string;
  readonly state: TaskState;
  /** Dispatches so far; the current attempt while dispatched or running. */
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly placement: TaskPlacementKind;
  readonly selector: Readonly<Record<string, string>>;
  readonly priority: number;
  /** 0: none. */
  readonly timeoutMs: number;
  /** The node id of the current or last attempt's worker. */
  readonly worker: string | undefined;
  readonly leaderEpoch: number;
  readonly payloadBytes: number;
  /** What the handler returned, once succeeded. */
  readonly result: Uint8Array | undefined;
  /** Why it failed, or why its last attempt did. */
  readonly error: TaskFailureInfo | undefined;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  /** The running attempt's last reported progress, 0 to 1. */
  readonly progress: number;
  readonly progressMessage: string;
  /** A cancel was asked for; the worker has not confirmed it yet. */
  readonly cancelRequested: boolean;
}

const states = new Map<TaskStateEnum, TaskState>([
  [TaskStateEnum.QUEUED, "queued"],
  [TaskStateEnum.DISPATCHED, "dispatched"],
  [TaskStateEnum.RUNNING, "running"],
  [TaskStateEnum.SUCCEEDED, "succeeded"],
  [TaskStateEnum.FAILED, "failed"],
  [TaskStateEnum.CANCELLED, "cancelled"],
]);

/** The protocol enum of a state. */
export function taskStateEnum(s: TaskState): TaskStateEnum {
  for (const [k, v] of states) if (v === s) return k;
  return TaskStateEnum.UNSPECIFIED;
}

const reasons = new Map<TaskErrorReason, TaskFailureInfo["reason"]>([
  [TaskErrorReason.HANDLER, "handler"],
  [TaskErrorReason.TIMEOUT, "timeout"],
  [TaskErrorReason.WORKER_LOST, "worker_lost"],
]);

/** @internal From the protocol message. */
export function taskInfo(t: Task): TaskInfo {
  return {
    id: t.id,
    group: t.group,
    state: states.get(t.state) ?? "queued",
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    placement: t.placement === TaskPlacement.SHARD ? "shard" : "balanced",
    selector: { ...t.selector },
    priority: t.priority,
    timeoutMs: t.timeoutMs,
    worker: t.worker === "" ? undefined : t.worker,
    leaderEpoch: Number(t.leaderEpoch),
    payloadBytes: t.payloadBytes,
    result: t.state === TaskStateEnum.SUCCEEDED ? t.result : undefined,
    error:
      t.error === undefined
        ? undefined
        : {
            message: t.error.message,
            reason: reasons.get(t.error.reason) ?? "unknown",
            retryable: t.error.retryable,
            attempt: t.error.attempt,
          },
    createdAt: new Date(Number(t.createdAtMs)),
    updatedAt: new Date(Number(t.updatedAtMs)),
    progress: t.progress,
    progressMessage: t.progressMessage,
    cancelRequested: t.cancelRequested,
  };
}

const utf8 = new TextEncoder();

function int(name: string, v: number | undefined, min: number, max: number): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < min || v > max)
    throw new TaskClientError("invalid_argument", `${name} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

/** @internal To the protocol message; `id` already chosen. Checks what protobuf cannot carry. */
export function taskSpec(t: TaskInput, id: string): MessageInitShape<typeof TaskSpecSchema> {
  int("priority", t.priority, 1, 5);
  int("maxAttempts", t.maxAttempts, 1, 100);
  int("timeoutMs", t.timeoutMs, 0, 0xffff_ffff);
  if (t.placement !== undefined && t.placement !== "balanced" && t.placement !== "shard")
    throw new TaskClientError(
      "invalid_argument",
      `placement must be "balanced" or "shard", got ${JSON.stringify(t.placement)}`,
    );
  return {
    id,
    payload: typeof t.payload === "string" ? utf8.encode(t.payload) : (t.payload ?? new Uint8Array()),
    placement: t.placement === "shard" ? TaskPlacement.SHARD : TaskPlacement.BALANCED,
    selector: { ...(t.selector ?? {}) },
    priority: t.priority ?? 0,
    maxAttempts: t.maxAttempts ?? 0,
    timeoutMs: t.timeoutMs ?? 0,
  };
}
