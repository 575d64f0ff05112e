import { readFileSync } from "node:fs";
import {
  CancelTaskRequestSchema,
  CancelTaskResponseSchema,
  GetTaskRequestSchema,
  GetTaskResponseSchema,
  ListTasksRequestSchema,
  ListTasksResponseSchema,
  SubmitTasksRequestSchema,
  SubmitTasksResponseSchema,
  type Task,
  TaskErrorReason,
  TaskPlacement,
  TaskState,
  WatchTasksRequestSchema,
  WatchTasksResponseSchema,
} from "@org/proto";
import type { Command, Option } from "commander";
import { checkName } from "../server/names.js";
import { createEtcdClient } from "../store/etcd-client.js";
import { keyLayout } from "../store/keys.js";
import { discoverCoordinators } from "./data-upload.js";
import { TaskRpc, TaskRpcError } from "./task-rpc.js";

/** What `coordinator tasks ...` needs from bin.ts. */
export interface TaskCommandContext {
  readonly etcdOption: () => Option;
  readonly nsOption: () => Option;
  /** Prints one line on stderr and exits 2. */
  readonly usageError: (message: string) => never;
}

interface Common {
  etcd: string;
  namespace: string;
  group: string;
  coordinator?: string;
}

const stateNames: Record<string, TaskState> = {
  queued: TaskState.QUEUED,
  dispatched: TaskState.DISPATCHED,
  running: TaskState.RUNNING,
  succeeded: TaskState.SUCCEEDED,
  failed: TaskState.FAILED,
  cancelled: TaskState.CANCELLED,
};

function stateName(s: TaskState): string {
  return Object.entries(stateNames).find(([, v]) => v === s)?.[0] ?? "unknown";
}

const reasons: Record<number, string> = {
  [TaskErrorReason.HANDLER]: "handler",
  [TaskErrorReason.TIMEOUT]: "timeout",
  [TaskErrorReason.WORKER_LOST]: "worker_lost",
};

/** A task as one JSON object (the result as UTF-8 text, and base64 beside it). */
export function taskJson(t: Task): Record<string, unknown> {
  return {
    id: t.id,
    group: t.group,
    state: stateName(t.state),
    attempt: t.attempt,
    maxAttempts: t.maxAttempts,
    placement: t.placement === TaskPlacement.SHARD ? "shard" : "balanced",
    selector: t.selector,
    priority: t.priority,
    timeoutMs: t.timeoutMs,
    worker: t.worker === "" ? null : t.worker,
    leaderEpoch: Number(t.leaderEpoch),
    payloadBytes: t.payloadBytes,
    ...(t.result.byteLength > 0
      ? { result: new TextDecoder().decode(t.result), resultBase64: Buffer.from(t.result).toString("base64") }
      : {}),
    ...(t.error === undefined
      ? {}
      : {
          error: {
            message: t.error.message,
            reason: reasons[t.error.reason] ?? "unknown",
            retryable: t.error.retryable,
            attempt: t.error.attempt,
          },
        }),
    ...(t.state === TaskState.RUNNING ? { progress: t.progress, progressMessage: t.progressMessage } : {}),
    ...(t.cancelRequested ? { cancelRequested: true } : {}),
    createdAt: new Date(Number(t.createdAtMs)).toISOString(),
    updatedAt: new Date(Number(t.updatedAtMs)).toISOString(),
  };
}

/** One line per task: id, state, attempt, worker, and the result or error. */
export function taskLine(t: Task): string {
  const worker = t.worker === "" ? "-" : t.worker;
  const tail =
    t.error !== undefined && t.state === TaskState.FAILED
      ? ` error=${JSON.stringify(t.error.message)}`
      : t.result.byteLength > 0
        ? ` result=${JSON.stringify(new TextDecoder().decode(t.result).slice(0, 80))}`
        : "";
  return `${t.id}\t${stateName(t.state)}\tattempt=${t.attempt}/${t.maxAttempts}\tworker=${worker}${tail}`;
}

function int(ctx: TaskCommandContext, name: string, v: string | undefined, min: number, max: number) {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    ctx.usageError(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  return n;
}

async function withRpc<T>(ctx: TaskCommandContext, o: Common, fn: (rpc: TaskRpc) => Promise<T>): Promise<T> {
  const bad = checkName("group", o.group);
  if (bad !== undefined) ctx.usageError(bad);
  let addresses: string[];
  if (o.coordinator !== undefined) addresses = o.coordinator.split(",").filter((a) => a !== "");
  else {
    const client = createEtcdClient(o.etcd.split(","));
    try {
      addresses = await discoverCoordinators(client, keyLayout(o.namespace));
    } finally {
      client.close();
    }
  }
  const rpc = new TaskRpc(addresses);
  try {
    return await fn(rpc);
  } catch (e) {
    if (e instanceof TaskRpcError) {
      process.stderr.write(`coordinator: ${e.statusName}: ${e.message}\n`);
      process.exit(e.code === 3 /* INVALID_ARGUMENT */ ? 2 : 1);
    }
    throw e;
  } finally {
    rpc.close();
  }
}

/**
 * `coordinator tasks submit|get|list|cancel|watch`: the TaskService from the command line,
 * through the leading replica (found from the election keys in etcd, or --coordinator).
 */
export function addTaskCommands(program: Command, ctx: TaskCommandContext): void {
  const tasks = program
    .command("tasks")
    .description("submit, inspect, cancel and watch a group's tasks (see docs/tasks.md)");
  const common = (c: Command) =>
    c
      .addOption(ctx.etcdOption())
      .addOption(ctx.nsOption())
      .requiredOption("--group <group>", "the worker group")
      .option("--coordinator <host:port,...>", "replicas to ask (default: every live replica, from etcd)");

  common(tasks.command("submit").description("submit one task; prints it as JSON once it is durable"))
    .option("--id <id>", "the task id (default: generated by the leader)")
    .option("--payload <text>", "the payload, as UTF-8 text")
    .option("--payload-file <path>", "the payload, read from a file")
    .option("--placement <kind>", "balanced or shard", "balanced")
    .option("--selector <k=v...>", "labels a worker must carry (balanced placement)")
    .option("--priority <1-5>", "1 is the highest", "3")
    .option("--max-attempts <n>", "dispatches allowed before the task fails (default: the coordinator's, 3)")
    .option("--timeout <ms>", "execution timeout of one attempt, in ms")
    .option("--wait", "wait until the task is finished and print the final record")
    .action(
      async (
        o: Common & {
          id?: string;
          payload?: string;
          payloadFile?: string;
          placement: string;
          selector?: string[];
          priority: string;
          maxAttempts?: string;
          timeout?: string;
          wait?: boolean;
        },
      ) => {
        if (o.payload !== undefined && o.payloadFile !== undefined)
          ctx.usageError("give at most one of --payload and --payload-file");
        if (o.placement !== "balanced" && o.placement !== "shard")
          ctx.usageError(`--placement must be balanced or shard, got ${JSON.stringify(o.placement)}`);
        const selector: Record<string, string> = {};
        for (const kv of o.selector ?? []) {
          const i = kv.indexOf("=");
          if (i <= 0) ctx.usageError(`--selector wants key=value, got ${JSON.stringify(kv)}`);
          selector[kv.slice(0, i)] = kv.slice(i + 1);
        }
        const payload =
          o.payloadFile !== undefined
            ? new Uint8Array(readFileSync(o.payloadFile))
            : new TextEncoder().encode(o.payload ?? "");
        const spec = {
          id: o.id ?? "",
          payload,
          placement: o.placement === "shard" ? TaskPlacement.SHARD : TaskPlacement.BALANCED,
          selector,
          priority: int(ctx, "--priority", o.priority, 1, 5) ?? 3,
          maxAttempts: int(ctx, "--max-attempts", o.maxAttempts, 1, 100) ?? 0,
          timeoutMs: int(ctx, "--timeout", o.timeout, 0, 0xffff_ffff) ?? 0,
        };
        await withRpc(ctx, o, async (rpc) => {
          const res = await rpc.unary("SubmitTasks", SubmitTasksRequestSchema, SubmitTasksResponseSchema, {
            group: o.group,
            tasks: [spec],
          });
          const r = res.results[0];
          if (r?.task === undefined) throw new TaskRpcError(13, "the leader answered without the task");
          let task = r.task;
          if (o.wait === true) task = await waitFinal(rpc, o.group, task.id);
          process.stdout.write(`${JSON.stringify({ ...taskJson(task), created: r.created })}\n`);
        });
      },
    );

  common(tasks.command("get").description("print one task as JSON"))
    .requiredOption("--id <id>", "the task id")
    .action((o: Common & { id: string }) =>
      withRpc(ctx, o, async (rpc) => {
        const res = await rpc.unary("GetTask", GetTaskRequestSchema, GetTaskResponseSchema, {
          group: o.group,
          taskId: o.id,
        });
        if (res.task !== undefined) process.stdout.write(`${JSON.stringify(taskJson(res.task))}\n`);
      }),
    );

  common(tasks.command("cancel").description("cancel a task (a running one: its handler's signal aborts)"))
    .requiredOption("--id <id>", "the task id")
    .option("--reason <text>", "why, for the record and logs", "cancelled from the CLI")
    .action((o: Common & { id: string; reason: string }) =>
      withRpc(ctx, o, async (rpc) => {
        const res = await rpc.unary("CancelTask", CancelTaskRequestSchema, CancelTaskResponseSchema, {
          group: o.group,
          taskId: o.id,
          reason: o.reason,
        });
        if (res.task !== undefined) process.stdout.write(`${JSON.stringify(taskJson(res.task))}\n`);
      }),
    );

  common(tasks.command("list").description("list a group's tasks, one per line (or JSON lines with --json)"))
    .option("--state <state>", `only this state: ${Object.keys(stateNames).join(", ")}`)
    .option("--limit <n>", "at most this many", "1000")
    .option("--json", "one JSON object per line")
    .action((o: Common & { state?: string; limit: string; json?: boolean }) => {
      const state = o.state === undefined ? TaskState.UNSPECIFIED : stateNames[o.state];
      if (state === undefined)
        return ctx.usageError(`--state must be one of ${Object.keys(stateNames).join(", ")}`);
      const limit = int(ctx, "--limit", o.limit, 1, 10_000_000) ?? 1000;
      return withRpc(ctx, o, async (rpc) => {
        let pageToken = "";
        let shown = 0;
        do {
          const res = await rpc.unary("ListTasks", ListTasksRequestSchema, ListTasksResponseSchema, {
            group: o.group,
            state,
            pageSize: Math.min(500, limit - shown),
            pageToken,
          });
          for (const t of res.tasks) {
            process.stdout.write(`${o.json === true ? JSON.stringify(taskJson(t)) : taskLine(t)}\n`);
            shown += 1;
          }
          pageToken = res.nextPageToken;
        } while (pageToken !== "" && shown < limit);
      });
    });

  common(
    tasks
      .command("watch")
      .description(
        "print the group's task changes as they happen (JSON lines) until interrupted or --until-final",
      ),
  )
    .option("--id <ids...>", "only these tasks")
    .option("--until-final", "stop once every task named with --id is finished")
    .action((o: Common & { id?: string[]; untilFinal?: boolean }) =>
      withRpc(ctx, o, async (rpc) => {
        const ac = new AbortController();
        const stop = () => ac.abort();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        const open = new Set(o.id ?? []);
        let cursor = "";
        try {
          for await (const m of rpc.stream(
            "WatchTasks",
            WatchTasksRequestSchema,
            WatchTasksResponseSchema,
            () => ({ group: o.group, taskIds: o.id ?? [], cursor }),
            ac.signal,
          )) {
            if (m.cursor !== "") cursor = m.cursor;
            for (const t of m.tasks) {
              process.stdout.write(`${JSON.stringify(taskJson(t))}\n`);
              if (isFinal(t.state)) open.delete(t.id);
            }
            if (o.untilFinal === true && open.size === 0) break;
          }
        } finally {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
        }
      }),
    );
}

function isFinal(s: TaskState): boolean {
  return s === TaskState.SUCCEEDED || s === TaskState.FAILED || s === TaskState.CANCELLED;
}

async function waitFinal(rpc: TaskRpc, group: string, id: string): Promise<Task> {
  for (;;) {
    const res = await rpc.unary("GetTask", GetTaskRequestSchema, GetTaskResponseSchema, {
      group,
      taskId: id,
    });
    if (res.task !== undefined && isFinal(res.task.state)) return res.task;
    await new Promise((r) => setTimeout(r, 200));
  }
}
