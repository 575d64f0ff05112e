import { type DescMessage, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import {
  Metadata,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import {
  CancelTaskRequestSchema,
  CancelTaskResponseSchema,
  GetTaskRequestSchema,
  GetTaskResponseSchema,
  ListTasksRequestSchema,
  ListTasksResponseSchema,
  SubmitTasksRequestSchema,
  SubmitTasksResponseSchema,
  taskServiceName,
  WatchTasksRequestSchema,
  type WatchTasksResponse,
  WatchTasksResponseSchema,
} from "@org/proto";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { Authorizer } from "../server/authorizer.js";
import { StatusError } from "../server/shard-server.js";
import { TaskError, type TaskErrorCode } from "./task-error.js";
import type { TaskHost, TaskHostRoute } from "./task-host.js";
import { createTaskHandlers, type TaskServiceLimits } from "./task-service.js";

/** Options of {@link addTaskService}. */
export interface TaskServiceOptions {
  /** Aborting it ends every call in progress (the server's shutdown signal). */
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly limits: TaskServiceLimits;
  /** Every call needs the `submit` right in its request's group (see server/authorizer.ts). */
  readonly auth?: Authorizer | undefined;
}

/** A gRPC status as grpc-js sends it. */
export interface TaskStatus {
  readonly code: status;
  readonly details: string;
  readonly metadata: Metadata;
}

const codes: Record<TaskErrorCode, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  failed_precondition: status.FAILED_PRECONDITION,
  aborted: status.ABORTED,
  unavailable: status.UNAVAILABLE,
};

/** UNAVAILABLE naming the leader (empty: unknown), as followers refuse HeartbeatStream. */
export function notLeaderStatus(leader: string, details?: string): TaskStatus {
  const metadata = new Metadata();
  metadata.set("x-shard-leader", leader);
  return {
    code: status.UNAVAILABLE,
    details:
      details ??
      (leader === ""
        ? "not the leader, and no leader is known yet"
        : `not the leader; the leader is ${leader}`),
    metadata,
  };
}

/**
 * The status for an error out of a handler or the host. Every UNAVAILABLE carries
 * `x-shard-leader` (empty here: a deposed or closing leader cannot name the next one), so
 * clients treat it as "find the leader" and back off.
 */
export function taskStatus(e: unknown): TaskStatus {
  // An authentication or authorization refusal (server/authorizer.ts).
  if (e instanceof StatusError)
    return { code: e.code, details: e.message, metadata: e.metadata ?? new Metadata() };
  if (e instanceof TaskError) {
    const code = codes[e.code];
    return code === status.UNAVAILABLE
      ? notLeaderStatus("", e.message)
      : { code, details: e.message, metadata: new Metadata() };
  }
  if (e instanceof CoordinatorError) {
    if (e.code === "deposed" || e.code === "closed" || e.code === "etcd_unavailable")
      return notLeaderStatus("", `${e.code}: ${e.message}`);
    return { code: status.INTERNAL, details: `${e.code}: ${e.message}`, metadata: new Metadata() };
  }
  return {
    code: status.INTERNAL,
    details: e instanceof Error ? e.message : String(e),
    metadata: new Metadata(),
  };
}

const identity = (b: Buffer) => b;
const asBuffer = (u8: Uint8Array) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);

function method<Res extends DescMessage>(name: string, res: Res, responseStream: boolean) {
  return {
    path: `/${taskServiceName}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: (m: MessageShape<Res>) => asBuffer(toBinary(res, m)),
    responseDeserialize: (b: Buffer) => fromBinary(res, b),
  };
}

/**
 * `shard.v1.TaskService` as a grpc-js service definition with protobuf-es serializers.
 * Requests are decoded in the handlers (not by grpc-js), so undecodable bytes get
 * INVALID_ARGUMENT rather than grpc-js's generic INTERNAL.
 */
export const taskServiceDefinition: ServiceDefinition = {
  SubmitTasks: method("SubmitTasks", SubmitTasksResponseSchema, false),
  GetTask: method("GetTask", GetTaskResponseSchema, false),
  ListTasks: method("ListTasks", ListTasksResponseSchema, false),
  CancelTask: method("CancelTask", CancelTaskResponseSchema, false),
  WatchTasks: method("WatchTasks", WatchTasksResponseSchema, true),
};

/**
 * Adds TaskService to a grpc-js server (the replica's ShardService server, before it
 * binds). Each call asks `route` who serves it: while this replica leads, the host;
 * otherwise it is refused with UNAVAILABLE and `x-shard-leader` naming the leader.
 *
 * @example
 * ```ts
 * // in startShardServer, next to server.addService(service, ...):
 * addTaskService(server, () => (leader ? { host: leader.tasks } : { leader: leaderAddress() }), {
 *   signal: shutdown.signal,
 *   log,
 *   limits: taskOptions,
 * });
 * ```
 */
export function addTaskService(server: Server, route: () => TaskHostRoute, o: TaskServiceOptions): void {
  const h = createTaskHandlers(o.limits);
  const calls = new Set<AbortController>();
  o.signal.addEventListener(
    "abort",
    () => {
      for (const ac of calls) ac.abort();
    },
    { once: true },
  );

  /** The host for a call, or undefined after answering the call with the refusal. */
  const hostFor = (fail: (s: TaskStatus) => void): TaskHost | undefined => {
    if (o.signal.aborted) {
      fail(notLeaderStatus("", "this replica is shutting down"));
      return undefined;
    }
    const r = route();
    if ("host" in r) return r.host;
    fail(notLeaderStatus(r.leader));
    return undefined;
  };

  /** Throws the refusal when the caller lacks the `submit` right in `group`. */
  const admit = async (call: Parameters<Authorizer["check"]>[0], group: string): Promise<void> => {
    if (o.auth !== undefined && o.auth.mode !== "none") await o.auth.check(call, group, "submit");
  };

  function unary<Req extends DescMessage, Res>(
    name: string,
    req: Req,
    run: (host: TaskHost, request: MessageShape<Req>, signal: AbortSignal) => Promise<Res>,
  ) {
    return (call: ServerUnaryCall<Buffer, Res>, callback: sendUnaryData<Res>) => {
      let request: MessageShape<Req>;
      try {
        request = fromBinary(req, call.request);
      } catch (e) {
        callback({ code: status.INVALID_ARGUMENT, details: `undecodable ${req.typeName}: ${String(e)}` });
        return;
      }
      const ac = new AbortController();
      calls.add(ac);
      call.on("cancelled", () => ac.abort());
      admit(call, (request as { group?: string }).group ?? "")
        .then(async () => {
          const host = hostFor((s) => callback(s));
          return host === undefined ? undefined : { res: await run(host, request, ac.signal) };
        })
        .then(
          (done) => {
            if (done !== undefined) callback(null, done.res);
          },
          (e: unknown) => {
            const s = taskStatus(e);
            if (s.code === status.INTERNAL)
              o.log.error({ event: "task_call_failed", method: name, err: s.details });
            callback(s);
          },
        )
        .finally(() => calls.delete(ac));
    };
  }

  server.addService(taskServiceDefinition, {
    SubmitTasks: unary("SubmitTasks", SubmitTasksRequestSchema, (host, r, s) => h.submitTasks(host, r, s)),
    GetTask: unary("GetTask", GetTaskRequestSchema, (host, r, s) => h.getTask(host, r, s)),
    ListTasks: unary("ListTasks", ListTasksRequestSchema, (host, r, s) => h.listTasks(host, r, s)),
    CancelTask: unary("CancelTask", CancelTaskRequestSchema, (host, r, s) => h.cancelTask(host, r, s)),
    WatchTasks: (call: ServerWritableStream<Buffer, WatchTasksResponse>) => {
      const fail = (s: TaskStatus) => call.emit("error", s);
      let request: MessageShape<typeof WatchTasksRequestSchema>;
      try {
        request = fromBinary(WatchTasksRequestSchema, call.request);
      } catch (e) {
        fail({
          code: status.INVALID_ARGUMENT,
          details: `undecodable ${WatchTasksRequestSchema.typeName}: ${String(e)}`,
          metadata: new Metadata(),
        });
        return;
      }
      const ac = new AbortController();
      calls.add(ac);
      call.on("cancelled", () => ac.abort());
      void (async () => {
        try {
          await admit(call, request.group);
          const host = hostFor(fail);
          if (host === undefined) return;
          for await (const msg of h.watchTasks(host, request, ac.signal)) {
            if (ac.signal.aborted) break;
            // HTTP/2 flow control: a watcher that stops reading stops the stream here
            // (its change buffer then fills and it is ended with ABORTED).
            if (!call.write(msg)) await drained(call, ac.signal);
          }
          if (ac.signal.aborted && !call.cancelled)
            fail(notLeaderStatus("", "this replica is shutting down"));
          else if (!call.cancelled) call.end();
        } catch (e) {
          if (!call.cancelled) fail(taskStatus(e));
        } finally {
          calls.delete(ac);
        }
      })();
    },
  });
}

function drained(call: ServerWritableStream<Buffer, WatchTasksResponse>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
