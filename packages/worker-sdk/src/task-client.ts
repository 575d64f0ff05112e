import { randomUUID } from "node:crypto";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { TaskService } from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { peerDropped, tlsFailure } from "./stream-failure.js";
import { TaskClientError, type TaskClientErrorCode } from "./task-client-error.js";
import {
  type ResolvedTaskClientOptions,
  resolveTaskClientOptions,
  type TaskClientOptions,
} from "./task-client-options.js";
import {
  isFinalTaskState,
  type TaskInfo,
  type TaskInput,
  type TaskState,
  taskInfo,
  taskSpec,
  taskStateEnum,
} from "./task-info.js";

/** One submitted task's outcome. */
export interface SubmittedTask {
  readonly task: TaskInfo;
  /** False when a task with this id and payload existed already (a retry, say). */
  readonly created: boolean;
}

/** A page of {@link TaskClient.list}. */
export interface TaskPage {
  readonly tasks: readonly TaskInfo[];
  /** Pass as `pageToken` for the next page; empty on the last one. */
  readonly nextPageToken: string;
}

/**
 * What {@link TaskClient.watch} yields: a task's state after a change (or as it stands, in
 * the snapshot that starts a watch), and `synced` once the snapshot is complete; after a
 * reconnect the snapshot (or replay) repeats and `synced` comes again.
 */
export type TaskWatchEvent =
  | { readonly type: "task"; readonly task: TaskInfo }
  | { readonly type: "synced"; readonly cursor: string };

const statusCodes = new Map<Code, TaskClientErrorCode>([
  [Code.InvalidArgument, "invalid_argument"],
  [Code.NotFound, "not_found"],
  [Code.AlreadyExists, "already_exists"],
  [Code.ResourceExhausted, "resource_exhausted"],
  [Code.FailedPrecondition, "failed_precondition"],
  [Code.Unauthenticated, "unauthenticated"],
  [Code.PermissionDenied, "permission_denied"],
]);

/**
 * Codes worth another attempt (at the leader, or after a backoff); all calls here are idempotent.
 * A call the coordinator dropped mid-way (killed, force-closed) is retried too: see peerDropped.
 */
const retryable: ReadonlySet<Code> = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted]);

/**
 * Submits tasks to worker groups and follows them. Create it with {@link createTaskClient}.
 *
 * Every call goes to the leading coordinator: a follower's UNAVAILABLE names the leader
 * (`x-shard-leader`) and the call goes straight there; with no leader known the client
 * rotates through `coordinators` with full-jitter backoff until `callTimeoutMs`. Every
 * call is safe to retry: submit is idempotent by id (the client chooses ids the caller
 * leaves out), and watches resume from their cursor.
 */
export class TaskClient implements AsyncDisposable {
  readonly #o: ResolvedTaskClientOptions;
  readonly #closing = new AbortController();
  readonly #managers = new Map<
    string,
    { manager: Http2SessionManager; client: Client<typeof TaskService> }
  >();
  #target: string;
  #rotation = 0;
  #closed: Promise<void> | undefined;

  /** @internal use {@link createTaskClient} */
  constructor(options: ResolvedTaskClientOptions) {
    this.#o = options;
    this.#target = options.coordinators[0] ?? "";
    const { signal } = options;
    if (signal !== undefined) {
      const onAbort = () => void this.close();
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener("abort", onAbort, { once: true });
        this.#closing.signal.addEventListener("abort", () => signal.removeEventListener("abort", onAbort), {
          once: true,
        });
      }
    }
  }

  /**
   * Submits one task, or a batch for one group, and resolves once they are durable (stored
   * in etcd by the leader). A batch larger than one request allows is sent as several
   * requests; if one fails, the earlier ones may have been stored: submitting the same
   * batch again is safe (ids make it idempotent).
   *
   * @example
   * ```ts
   * const { task } = await tasks.submit("billing", { id: "invoice-7", payload: JSON.stringify(invoice), priority: 1 });
   * const many = await tasks.submit("billing", invoices.map((i) => ({ id: `invoice-${i.id}`, payload: JSON.stringify(i) })));
   * ```
   */
  submit(group: string, task: TaskInput, options?: { signal?: AbortSignal }): Promise<SubmittedTask>;
  submit(
    group: string,
    tasks: readonly TaskInput[],
    options?: { signal?: AbortSignal },
  ): Promise<SubmittedTask[]>;
  async submit(
    group: string,
    input: TaskInput | readonly TaskInput[],
    options: { signal?: AbortSignal } = {},
  ): Promise<SubmittedTask | SubmittedTask[]> {
    const list: readonly TaskInput[] = Array.isArray(input) ? input : [input as TaskInput];
    if (list.length === 0) return [];
    const specs = list.map((t) => taskSpec(t, t.id ?? randomUUID()));
    // Split by count and estimated size; a task larger than the budget goes alone.
    const chunks: (typeof specs)[] = [];
    let chunk: typeof specs = [];
    let bytes = 0;
    for (const s of specs) {
      const size =
        (s.payload?.byteLength ?? 0) + (s.id?.length ?? 0) + 64 + JSON.stringify(s.selector ?? {}).length;
      if (
        chunk.length > 0 &&
        (chunk.length >= this.#o.maxTasksPerRequest || bytes + size > this.#o.maxRequestBytes)
      ) {
        chunks.push(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(s);
      bytes += size;
    }
    chunks.push(chunk);
    const results: SubmittedTask[][] = new Array(chunks.length);
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < chunks.length; i = next++) {
        const tasks = chunks[i] ?? [];
        const res = await this.#unary(
          (c, callOptions) => c.submitTasks({ group, tasks }, callOptions),
          options.signal,
        );
        results[i] = res.results.map((r) => {
          if (r.task === undefined)
            throw new TaskClientError("internal", "SubmitTasks answered without a task");
          return { task: taskInfo(r.task), created: r.created };
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#o.submitConcurrency, chunks.length) }, worker));
    const all = results.flat();
    return Array.isArray(input) ? all : (all[0] as SubmittedTask);
  }

  /**
   * The task as it stands; `TaskClientError("not_found")` when the group has none with
   * that id (a finished task is forgotten after the coordinators' `--task-retention`).
   */
  async get(group: string, id: string, options: { signal?: AbortSignal } = {}): Promise<TaskInfo> {
    const res = await this.#unary((c, o) => c.getTask({ group, taskId: id }, o), options.signal);
    if (res.task === undefined) throw new TaskClientError("internal", "GetTask answered without a task");
    return taskInfo(res.task);
  }

  /**
   * A page of the group's tasks, ascending by id, optionally of one state. A page may
   * hold fewer than `pageSize` even when more follow: go on while `nextPageToken` is set.
   *
   * @example
   * ```ts
   * let pageToken = "";
   * do {
   *   const page = await tasks.list("billing", { state: "failed", pageSize: 100, pageToken });
   *   for (const t of page.tasks) console.log(t.id, t.error?.message);
   *   pageToken = page.nextPageToken;
   * } while (pageToken !== "");
   * ```
   */
  async list(
    group: string,
    options: { state?: TaskState; pageSize?: number; pageToken?: string; signal?: AbortSignal } = {},
  ): Promise<TaskPage> {
    const res = await this.#unary(
      (c, o) =>
        c.listTasks(
          {
            group,
            state: options.state === undefined ? 0 : taskStateEnum(options.state),
            pageSize: options.pageSize ?? 0,
            pageToken: options.pageToken ?? "",
          },
          o,
        ),
      options.signal,
    );
    return { tasks: res.tasks.map(taskInfo), nextPageToken: res.nextPageToken };
  }

  /**
   * Cancels a task: a queued one is cancelled at once; a running one is told to stop (its
   * handler's signal aborts) and turns `cancelled` when its worker confirms, which
   * {@link wait} reports. Cancelling a cancelled task is a no-op; a succeeded or failed one
   * fails `failed_precondition`.
   */
  async cancel(
    group: string,
    id: string,
    options: { reason?: string; signal?: AbortSignal } = {},
  ): Promise<TaskInfo> {
    const res = await this.#unary(
      (c, o) => c.cancelTask({ group, taskId: id, reason: options.reason ?? "" }, o),
      options.signal,
    );
    if (res.task === undefined) throw new TaskClientError("internal", "CancelTask answered without a task");
    return taskInfo(res.task);
  }

  /**
   * Resolves with the task once it is final (succeeded, failed or cancelled), however many
   * leader changes happen meanwhile. No deadline of its own: pass a signal to give up.
   * Fails `not_found` when the group has no such task.
   *
   * @example
   * ```ts
   * const { task } = await tasks.submit("billing", { payload: "7" });
   * const done = await tasks.wait("billing", task.id, { signal: AbortSignal.timeout(60_000) });
   * if (done.state === "succeeded") console.log(new TextDecoder().decode(done.result));
   * ```
   */
  async wait(group: string, id: string, options: { signal?: AbortSignal } = {}): Promise<TaskInfo> {
    let seen = false;
    for await (const e of this.watch(group, { ids: [id], signal: options.signal })) {
      if (e.type === "task" && e.task.id === id) {
        seen = true;
        if (isFinalTaskState(e.task.state)) return e.task;
      } else if (e.type === "synced" && !seen) {
        // The snapshot holds every watched task that exists.
        throw new TaskClientError("not_found", `group ${group} has no task ${id}`);
      }
    }
    throw new TaskClientError("closed", "wait ended before the task finished");
  }

  /**
   * The changes of some tasks (`ids`) or of a whole group, until `signal` aborts or the
   * client closes (the iteration then just ends). Starts with a snapshot (the named tasks
   * as they stand, or the group's unfinished tasks) followed by `synced`; reconnects to
   * the leader by itself and resumes from its cursor, so a change is never lost (a task
   * may be reported twice). Pass `cursor` (a `synced` event's) to resume an earlier watch.
   *
   * @example
   * ```ts
   * for await (const e of tasks.watch("billing", { signal })) {
   *   if (e.type === "task") console.log(e.task.id, e.task.state, e.task.progress);
   * }
   * ```
   */
  async *watch(
    group: string,
    options: { ids?: readonly string[]; cursor?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<TaskWatchEvent> {
    const signal =
      options.signal === undefined
        ? this.#closing.signal
        : AbortSignal.any([options.signal, this.#closing.signal]);
    let cursor = options.cursor ?? "";
    let attempt = 0;
    let redirects = 0;
    while (!signal.aborted) {
      const target = this.#target;
      try {
        const stream = this.#client(target).watchTasks(
          { group, taskIds: [...(options.ids ?? [])], cursor },
          { signal },
        );
        for await (const res of stream) {
          attempt = 0;
          redirects = 0;
          for (const t of res.tasks) yield { type: "task", task: taskInfo(t) };
          // Snapshot messages before the last carry no cursor: resuming mid-snapshot
          // starts the snapshot again.
          if (res.cursor !== "") cursor = res.cursor;
          if (res.synced) yield { type: "synced", cursor };
        }
        // The leader ended the stream cleanly (it should not): resume.
      } catch (e) {
        if (signal.aborted) return;
        const next = this.#onFailure(e, target, redirects);
        if (next === "redirect") {
          redirects += 1;
          continue;
        }
        if (next !== "retry") throw next;
        redirects = 0;
      }
      await sleep(backoffDelay(attempt, this.#o.backoff), signal).catch(() => undefined);
      attempt += 1;
    }
  }

  /** Closes the connections; calls in progress fail with `closed`, watches end. Safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort(new TaskClientError("closed", "task client closed"));
      for (const { manager } of this.#managers.values()) manager.abort();
      this.#managers.clear();
    })();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- calls ---------------------------------------------------------------------------

  #client(target: string): Client<typeof TaskService> {
    let entry = this.#managers.get(target);
    if (entry === undefined) {
      if (this.#closing.signal.aborted) throw new TaskClientError("closed", "task client closed");
      const { scheme, sessionOptions, interceptors } = this.#o.security;
      const baseUrl = `${scheme}://${target}`;
      const manager = new Http2SessionManager(
        baseUrl,
        {
          pingIntervalMs: 10_000,
          pingTimeoutMs: 5_000,
          idleConnectionTimeoutMs: 60_000,
        },
        sessionOptions,
      );
      entry = {
        manager,
        client: createClient(
          TaskService,
          createGrpcTransport({ baseUrl, sessionManager: manager, interceptors }),
        ),
      };
      this.#managers.set(target, entry);
    }
    return entry.client;
  }

  /**
   * What to do after a failed attempt: follow the named leader, retry after a backoff
   * (rotating to the next replica), or give up with this error.
   */
  #onFailure(e: unknown, target: string, redirects: number): "redirect" | "retry" | TaskClientError {
    if (e instanceof TaskClientError) return e;
    const ce = ConnectError.from(e);
    // A failed handshake does not heal by retrying: say so at once.
    const tls = tlsFailure(ce.cause ?? e);
    if (tls !== undefined) return new TaskClientError("tls_failed", tls, { cause: ce });
    // The callers check their own signal first: a drop seen here is the coordinator's doing.
    if (!retryable.has(ce.code) && !peerDropped(ce))
      return new TaskClientError(statusCodes.get(ce.code) ?? "internal", ce.rawMessage, { cause: ce });
    // ABORTED: the leader ended a watch that fell behind; resume there at once.
    if (ce.code === Code.Aborted && redirects < 3) return "redirect";
    const leader = ce.metadata.get("x-shard-leader");
    this.#log({
      event: "task_call_retry",
      coordinator: target,
      code: Code[ce.code],
      message: ce.rawMessage,
      leader,
    });
    if (leader !== null && leader !== "" && leader !== target && redirects < 3) {
      this.#target = leader;
      return "redirect";
    }
    // No leader named (or a redirect loop): the next configured replica.
    this.#rotation = (this.#rotation + 1) % this.#o.coordinators.length;
    if (this.#target === target) this.#target = this.#o.coordinators[this.#rotation] ?? target;
    return "retry";
  }

  async #unary<T>(
    call: (
      client: Client<typeof TaskService>,
      options: { signal: AbortSignal; timeoutMs: number },
    ) => Promise<T>,
    userSignal: AbortSignal | undefined,
  ): Promise<T> {
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.#o.callTimeoutMs);
    try {
      return await this.#attempts(call, deadline.signal, userSignal);
    } finally {
      clearTimeout(timer);
    }
  }

  async #attempts<T>(
    call: (
      client: Client<typeof TaskService>,
      options: { signal: AbortSignal; timeoutMs: number },
    ) => Promise<T>,
    deadline: AbortSignal,
    userSignal: AbortSignal | undefined,
  ): Promise<T> {
    const signal = AbortSignal.any([
      deadline,
      this.#closing.signal,
      ...(userSignal === undefined ? [] : [userSignal]),
    ]);
    let attempt = 0;
    let redirects = 0;
    let last: unknown;
    for (;;) {
      if (signal.aborted) {
        if (deadline.aborted && !this.#closing.signal.aborted && userSignal?.aborted !== true)
          throw new TaskClientError("unavailable", `no leader answered within ${this.#o.callTimeoutMs} ms`, {
            cause: last,
          });
        throw new TaskClientError("closed", "call aborted", { cause: signal.reason });
      }
      const target = this.#target;
      try {
        return await call(this.#client(target), { signal, timeoutMs: this.#o.attemptTimeoutMs });
      } catch (e) {
        last = e;
        if (signal.aborted) continue;
        const next = this.#onFailure(e, target, redirects);
        if (next === "redirect") {
          redirects += 1;
          continue;
        }
        if (next !== "retry") throw next;
        redirects = 0;
      }
      await sleep(backoffDelay(attempt, this.#o.backoff), signal).catch(() => undefined);
      attempt += 1;
    }
  }

  #log(entry: Record<string, unknown>): void {
    try {
      this.#o.onLog({ time: new Date().toISOString(), ...entry });
    } catch {
      // a logging callback must not break the client
    }
  }
}

/**
 * A client for submitting and following tasks. No I/O happens until the first call.
 *
 * @example
 * ```ts
 * import { createTaskClient } from "@org/worker-sdk";
 * const tasks = createTaskClient({ coordinators: ["rm-1:50051", "rm-2:50051", "rm-3:50051"] });
 * const { task } = await tasks.submit("thumbnails", { payload: "s3://bucket/cat.jpg", selector: { gpu: "yes" } });
 * const done = await tasks.wait("thumbnails", task.id);
 * console.log(done.state, done.result);
 * await tasks.close();
 * ```
 */
export function createTaskClient(options: TaskClientOptions): TaskClient {
  return new TaskClient(resolveTaskClientOptions(options));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
