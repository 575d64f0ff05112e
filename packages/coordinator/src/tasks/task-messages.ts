import { create } from "@bufbuild/protobuf";
import { type Task, TaskErrorReason, TaskPlacement, TaskSchema, TaskState } from "@org/proto";
import {
  decodeBlob,
  type TaskErrorReasonName,
  type TaskPlacementName,
  type TaskStateName,
  type TaskView,
} from "./task-record.js";

// Domain names <-> protocol enums, in one place.

const stateToProto: Record<TaskStateName, TaskState> = {
  queued: TaskState.QUEUED,
  dispatched: TaskState.DISPATCHED,
  running: TaskState.RUNNING,
  succeeded: TaskState.SUCCEEDED,
  failed: TaskState.FAILED,
  cancelled: TaskState.CANCELLED,
};

const stateFromProto = new Map<TaskState, TaskStateName>(
  Object.entries(stateToProto).map(([k, v]) => [v, k as TaskStateName]),
);

/** The domain state of a protocol state; undefined for UNSPECIFIED or an unknown number. */
export function taskStateName(s: TaskState): TaskStateName | undefined {
  return stateFromProto.get(s);
}

export function taskStateMessage(s: TaskStateName): TaskState {
  return stateToProto[s];
}

/** UNSPECIFIED is BALANCED; an unknown number is undefined. */
export function placementName(p: TaskPlacement): TaskPlacementName | undefined {
  if (p === TaskPlacement.UNSPECIFIED || p === TaskPlacement.BALANCED) return "balanced";
  if (p === TaskPlacement.SHARD) return "shard";
  return undefined;
}

const placementToProto: Record<TaskPlacementName, TaskPlacement> = {
  balanced: TaskPlacement.BALANCED,
  shard: TaskPlacement.SHARD,
};

const reasonToProto: Record<TaskErrorReasonName, TaskErrorReason> = {
  handler: TaskErrorReason.HANDLER,
  timeout: TaskErrorReason.TIMEOUT,
  worker_lost: TaskErrorReason.WORKER_LOST,
};

/** A task as the protocol shows it. */
export function taskMessage(v: TaskView): Task {
  const r = v.record;
  return create(TaskSchema, {
    id: r.id,
    group: r.group,
    state: stateToProto[r.state],
    attempt: r.attempt,
    maxAttempts: r.maxAttempts,
    placement: placementToProto[r.placement],
    selector: { ...r.selector },
    priority: r.priority,
    timeoutMs: r.timeoutMs,
    worker: r.worker ?? "",
    leaderEpoch: BigInt(r.leaderEpoch),
    payloadBytes: r.payloadBytes,
    result: r.result === undefined ? new Uint8Array() : decodeBlob(r.result),
    error:
      r.error === undefined
        ? undefined
        : {
            message: r.error.message,
            reason: reasonToProto[r.error.reason],
            retryable: r.error.retryable,
            attempt: r.error.attempt,
          },
    createdAtMs: BigInt(Date.parse(r.createdAt)),
    updatedAtMs: BigInt(Date.parse(r.updatedAt)),
    progress: v.progress?.fraction ?? 0,
    progressMessage: v.progress?.message ?? "",
    cancelRequested: r.cancelRequested === true,
  });
}
