import { create } from "@bufbuild/protobuf";
import {
  type CancelTaskRequest,
  type CancelTaskResponse,
  CancelTaskResponseSchema,
  type GetTaskRequest,
  type GetTaskResponse,
  GetTaskResponseSchema,
  type ListTasksRequest,
  type ListTasksResponse,
  ListTasksResponseSchema,
  type SubmitTasksRequest,
  type SubmitTasksResponse,
  SubmitTasksResponseSchema,
  TaskPlacement,
  TaskState,
  type WatchTasksRequest,
  type WatchTasksResponse,
  WatchTasksResponseSchema,
} from "@org/proto";
import { checkName } from "../server/names.js";
import { TaskError } from "./task-error.js";
import type { TaskHost, TaskSubmission } from "./task-host.js";
import { placementName, taskMessage, taskStateName } from "./task-messages.js";
import type { TaskOptions } from "./task-options.js";
import { checkTaskId } from "./task-record.js";

/** Limits the service checks before the host sees a request. */
export type TaskServiceLimits = Pick<
  TaskOptions,
  "maxTaskBytes" | "maxTasksPerSubmit" | "defaultMaxAttempts"
>;

/** The handlers of TaskService over decoded requests (the transport lives in task-grpc.ts). */
export interface TaskHandlers {
  submitTasks(host: TaskHost, req: SubmitTasksRequest, signal: AbortSignal): Promise<SubmitTasksResponse>;
  getTask(host: TaskHost, req: GetTaskRequest, signal: AbortSignal): Promise<GetTaskResponse>;
  listTasks(host: TaskHost, req: ListTasksRequest, signal: AbortSignal): Promise<ListTasksResponse>;
  cancelTask(host: TaskHost, req: CancelTaskRequest, signal: AbortSignal): Promise<CancelTaskResponse>;
  watchTasks(host: TaskHost, req: WatchTasksRequest, signal: AbortSignal): AsyncIterable<WatchTasksResponse>;
}

const maxSelectorEntries = 16;
const labelKeyPattern = /^[A-Za-z0-9._/-]{1,128}$/;
const maxLabelValue = 256;
const maxWatchIds = 1000;
const maxPageSize = 1000;
const defaultPageSize = 100;
const defaultPriority = 3;
const maxAttemptsLimit = 100;
const maxReasonLength = 1024;
const maxCursorLength = 128;

function invalid(message: string): TaskError {
  return new TaskError("invalid_argument", message);
}

function checkGroup(group: string): void {
  const why = checkName("group", group);
  if (why !== undefined) throw invalid(why);
}

function checkId(field: string, id: string): void {
  const why = checkTaskId(id);
  if (why !== undefined) throw invalid(`${field}: ${why}`);
}

/** Checks one TaskSpec and resolves its defaults. */
function submission(
  spec: SubmitTasksRequest["tasks"][number],
  at: string,
  limits: TaskServiceLimits,
): TaskSubmission {
  if (spec.id !== "") checkId(`${at}.id`, spec.id);
  if (spec.payload.byteLength > limits.maxTaskBytes)
    throw new TaskError(
      "resource_exhausted",
      `${at}.payload is ${spec.payload.byteLength} bytes, over --max-task-bytes (${limits.maxTaskBytes})`,
    );
  const placement = placementName(spec.placement);
  if (placement === undefined) throw invalid(`${at}.placement ${spec.placement} is not a TaskPlacement`);
  const selector = Object.entries(spec.selector);
  if (selector.length > maxSelectorEntries)
    throw invalid(`${at}.selector has ${selector.length} entries; at most ${maxSelectorEntries}`);
  for (const [k, v] of selector) {
    if (!labelKeyPattern.test(k))
      throw invalid(`${at}.selector key ${JSON.stringify(k.slice(0, 40))} is not a label key`);
    if (v.length > maxLabelValue)
      throw invalid(`${at}.selector[${k}] is longer than ${maxLabelValue} characters`);
  }
  if (spec.placement === TaskPlacement.SHARD && selector.length > 0)
    throw invalid(`${at}: SHARD placement runs on the shard's owner; it takes no selector`);
  const priority = spec.priority === 0 ? defaultPriority : spec.priority;
  if (priority < 1 || priority > 5)
    throw invalid(`${at}.priority must be 1 (highest) to 5, got ${spec.priority}`);
  const maxAttempts = spec.maxAttempts === 0 ? limits.defaultMaxAttempts : spec.maxAttempts;
  if (maxAttempts > maxAttemptsLimit)
    throw invalid(`${at}.max_attempts must be 1-${maxAttemptsLimit}, got ${spec.maxAttempts}`);
  return {
    id: spec.id === "" ? undefined : spec.id,
    payload: spec.payload,
    placement,
    selector: Object.fromEntries(selector),
    priority,
    maxAttempts,
    timeoutMs: spec.timeoutMs,
  };
}

/**
 * TaskService's handlers: they check every request (INVALID_ARGUMENT naming the field,
 * RESOURCE_EXHAUSTED for an oversized payload), turn it into a {@link TaskHost} call, and
 * the answer back into protocol messages. The host decides the rest (NOT_FOUND,
 * ALREADY_EXISTS, a full queue, FAILED_PRECONDITION).
 *
 * @example
 * ```ts
 * const handlers = createTaskHandlers(resolveTaskOptions());
 * const res = await handlers.getTask(board, req, signal);
 * ```
 */
export function createTaskHandlers(limits: TaskServiceLimits): TaskHandlers {
  return {
    async submitTasks(host, req, signal) {
      checkGroup(req.group);
      if (req.tasks.length === 0) throw invalid("tasks is empty");
      if (req.tasks.length > limits.maxTasksPerSubmit)
        throw invalid(`tasks holds ${req.tasks.length} tasks; at most ${limits.maxTasksPerSubmit} per call`);
      const subs = req.tasks.map((t, i) => submission(t, `tasks[${i}]`, limits));
      const seen = new Set<string>();
      subs.forEach((s, i) => {
        if (s.id === undefined) return;
        if (seen.has(s.id)) throw invalid(`tasks[${i}].id ${s.id} appears twice in the batch`);
        seen.add(s.id);
      });
      const outcomes = await host.submit(req.group, subs, signal);
      return create(SubmitTasksResponseSchema, {
        results: outcomes.map((o) => ({ task: taskMessage(o.task), created: o.created })),
      });
    },

    async getTask(host, req, signal) {
      checkGroup(req.group);
      checkId("task_id", req.taskId);
      return create(GetTaskResponseSchema, {
        task: taskMessage(await host.get(req.group, req.taskId, signal)),
      });
    },

    async listTasks(host, req, signal) {
      checkGroup(req.group);
      const state = req.state === TaskState.UNSPECIFIED ? undefined : taskStateName(req.state);
      if (req.state !== TaskState.UNSPECIFIED && state === undefined)
        throw invalid(`state ${req.state} is not a TaskState`);
      const pageSize = req.pageSize === 0 ? defaultPageSize : req.pageSize;
      if (pageSize > maxPageSize) throw invalid(`page_size must be 1-${maxPageSize}, got ${req.pageSize}`);
      const page = await host.list(req.group, { state, pageSize, pageToken: req.pageToken }, signal);
      return create(ListTasksResponseSchema, {
        tasks: page.tasks.map(taskMessage),
        nextPageToken: page.nextPageToken,
      });
    },

    async cancelTask(host, req, signal) {
      checkGroup(req.group);
      checkId("task_id", req.taskId);
      if (req.reason.length > maxReasonLength)
        throw invalid(`reason is longer than ${maxReasonLength} characters`);
      const reason = req.reason === "" ? "cancelled by a client" : req.reason;
      return create(CancelTaskResponseSchema, {
        task: taskMessage(await host.cancel(req.group, req.taskId, reason, signal)),
      });
    },

    async *watchTasks(host, req, signal) {
      checkGroup(req.group);
      if (req.taskIds.length > maxWatchIds)
        throw invalid(`task_ids holds ${req.taskIds.length} ids; at most ${maxWatchIds}`);
      for (const [i, id] of req.taskIds.entries()) checkId(`task_ids[${i}]`, id);
      if (req.cursor.length > maxCursorLength)
        throw invalid(`cursor is longer than ${maxCursorLength} characters`);
      for await (const b of host.watch(req.group, { ids: req.taskIds, cursor: req.cursor }, signal)) {
        yield create(WatchTasksResponseSchema, {
          tasks: b.tasks.map(taskMessage),
          cursor: b.cursor,
          synced: b.synced,
        });
      }
    },
  };
}
