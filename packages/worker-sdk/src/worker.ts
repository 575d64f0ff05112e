import { Code, ConnectError } from "@connectrpc/connect";
import type { DataRecord } from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { WorkerError } from "./errors.js";
import { Session } from "./session.js";
import type { ShardLocation } from "./shard-location.js";
import { ShardRunner } from "./shard-runner.js";
import { sleep } from "./sleep.js";
import type { TaskHandler } from "./task-handler.js";
import { TaskRunner } from "./task-runner.js";
import {
  EventHub,
  type Shard,
  type ShardHandler,
  type WorkerAssignment,
  type WorkerEvent,
} from "./worker-event.js";
import { type ResolvedWorkerOptions, resolveWorkerOptions, type WorkerOptions } from "./worker-options.js";

/** How long a dispatch waits for runTasks before it is given back, in ms. */
const taskHandlerGraceMs = 5000;

/**
 * A member of a worker group. Create it with {@link connectWorker}.
 *
 * It holds one HeartbeatStream to the leading coordinator (following redirects, reconnecting
 * with full-jitter backoff), runs your shard handlers only while the shard is owned in an
 * active version and the session is confirmed, and stops them before the leader can hand
 * the shard to anyone else.
 *
 * Inside, a {@link Session} speaks to the leader and a {@link ShardRunner} runs the shards it
 * is told about; this class only ties them together and owns the lifecycle.
 */
export class Worker implements AsyncDisposable {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #session: Session;
  readonly #shards: ShardRunner;
  readonly #tasks: TaskRunner;
  readonly #closing = new AbortController();
  /** Replicas that answered FetchShardDataPages with UNIMPLEMENTED (older than it). */
  readonly #noDataPages = new Set<string>();
  #closed: Promise<Error | undefined> | undefined;
  #closeError: Error | undefined;

  /** @internal use {@link connectWorker} */
  constructor(options: ResolvedWorkerOptions) {
    this.#o = options;
    this.#hub = new EventHub(options.onLog, { group: options.group, node: options.nodeId }, options.metrics);
    this.#session = new Session(options, this.#hub, (e) => {
      // A refusal retrying cannot fix: stop every handler first, then close with the error.
      this.#closeError ??= e;
      this.#hub.log({ event: "worker_failed", code: e.code, message: e.message });
      void this.close();
    });
    this.#shards = new ShardRunner(options, this.#hub, this.#session);
    this.#tasks = new TaskRunner(
      {
        slots: options.capacity,
        handlerGraceMs: taskHandlerGraceMs,
        fenceHolds: () => {
          if (this.#session.valid(performance.now())) return true;
          this.#session.tick(); // tells the runners `fenced` now, not at the next tick
          return false;
        },
      },
      this.#hub,
      this.#session,
      this.#shards,
    );
    // The shard runner first: a task runner's check of a shard sees the same view applied.
    this.#session.attach(this.#shards);
    this.#session.attach(this.#tasks);
  }

  /** @internal Starts the connection loop; resolves on the first Welcome. */
  async start(): Promise<void> {
    const { signal } = this.#o;
    if (signal?.aborted) throw new WorkerError("closed", "the signal was already aborted");
    const onAbort = () => void this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#closing.signal.addEventListener("abort", () => signal?.removeEventListener("abort", onAbort), {
      once: true,
    });
    try {
      await this.#session.start();
    } catch (e) {
      await this.close();
      throw e;
    }
  }

  /** The current assignment (never undefined after connectWorker resolved, though maybe version 0). */
  get assignment(): WorkerAssignment {
    return this.#shards.assignment;
  }

  /** The replica (host:port) of the current stream; undefined while reconnecting. */
  get coordinator(): string | undefined {
    return this.#session.coordinator;
  }

  /** The leader epoch of the coordinator we last heard from. */
  get leaderEpoch(): number {
    return this.#session.leaderEpoch;
  }

  /**
   * This membership's incarnation, from the last Welcome: one more each time the leader did
   * not recognise the session and started a new one (0 when the coordinator does not say).
   */
  get incarnation(): number {
    return this.#session.incarnation;
  }

  /**
   * Whether this worker may process `taskId` right now: its shard (`shardOf(taskId,
   * totalShards)`: integers modulo the shard count, other strings by 32-bit FNV-1a) runs here
   * in an active version and the session is not fenced.
   */
  owns(taskId: number | bigint | string): boolean {
    // Checked synchronously against the fence, not only by the periodic tick: after a
    // process pause, a handler's timer may run before the tick that would fence us.
    if (!this.#session.valid(performance.now())) {
      this.#session.tick();
      return false;
    }
    return this.#shards.owns(taskId);
  }

  /**
   * Where `shard`'s records live when the group's data source is outside the coordinators
   * (PostgreSQL), so a job can read its shard straight from the database instead of through
   * {@link fetchShardData}: fewer hops, and the replicas never carry the bytes, at the price of
   * giving workers database credentials (docs/data.md weighs both). Undefined when the shard
   * is not running here (not owned, not active, or the session fenced) or the group uses the
   * built-in source. The descriptor never carries credentials.
   *
   * @example
   * ```ts
   * await worker.runShards(async (shard, signal) => {
   *   const loc = worker.shardLocation(shard);
   *   if (loc?.kind === "postgres") await readRows(pool, loc.query, signal);
   *   else for await (const rec of worker.fetchShardData(shard, { signal })) process(rec);
   * });
   * ```
   */
  shardLocation(shard: number | Shard): ShardLocation | undefined {
    const id = typeof shard === "number" ? shard : shard.id;
    const a = this.#shards.assignment;
    if (!a.running.includes(id)) return undefined;
    return this.#session.shardLocation(id, a.version);
  }

  /**
   * Runs `handler` for every shard this worker owns, starting each when its version is
   * active and aborting its signal the moment the shard is lost (or the session fenced).
   * Resolves when the worker closes and every handler has returned; rejects instead with the
   * {@link WorkerError} that ended the worker, if one did (e.g. `already_exists`: another
   * process took this node id over).
   *
   * @example
   * ```ts
   * await worker.runShards(async (shard, signal) => {
   *   for await (const rec of worker.fetchShardData(shard.id, { signal })) process(rec);
   * });
   * ```
   */
  runShards(handler: ShardHandler): Promise<void> {
    if (this.#closing.signal.aborted) return Promise.reject(new WorkerError("closed", "worker is closed"));
    return this.#shards.run(handler);
  }

  /**
   * Runs `handler` for every task the leader dispatches to this worker, at most `capacity`
   * (the option; an operator's SET_CAPACITY changes it) at once. Each attempt is reported
   * running, then succeeded (the returned bytes or string are the result), failed (a thrown
   * error; a `TaskError` with `retryable: false` fails the task for good) or cancelled (its
   * signal aborted: cancel, timeout, self-fence, shard loss, close). Resolves when the worker
   * closes and every handler has returned; rejects with the {@link WorkerError} that ended
   * the worker, if one did.
   *
   * Call it soon after {@link connectWorker}: a dispatch waits at most 5 s for a handler,
   * then is given back to the leader (which retries it elsewhere, counting an attempt).
   *
   * @example
   * ```ts
   * await worker.runTasks(async (task, signal) => {
   *   const input = new TextDecoder().decode(task.payload);
   *   task.progress(0.5, "halfway");
   *   return await render(input, { signal }); // a Uint8Array or a string
   * });
   * ```
   */
  runTasks(handler: TaskHandler): Promise<void> {
    if (this.#closing.signal.aborted) return Promise.reject(new WorkerError("closed", "worker is closed"));
    return this.#tasks.run(handler);
  }

  /** Task slots in force (the `capacity` option until an operator's SET_CAPACITY). */
  get taskSlots(): number {
    return this.#tasks.slots;
  }

  /**
   * Streams the records of `shard` (HTTP/2 flow control: the server produces only as fast as
   * you consume). After a transient failure it resumes after the last record received. Fails
   * with `WorkerError("not_owner")` when the shard is not ours in an active version, and with
   * `failed_precondition` when the group's data source is misconfigured or refuses the
   * coordinators' credentials (an operator must act; retrying cannot help).
   */
  async *fetchShardData(
    shard: number | Shard,
    options: { batchSize?: number; afterId?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<DataRecord> {
    const shardId = typeof shard === "number" ? shard : shard.id;
    let afterId = options.afterId ?? "";
    const signal =
      options.signal === undefined
        ? this.#closing.signal
        : AbortSignal.any([options.signal, this.#closing.signal]);
    for (let attempt = 0; ; attempt++) {
      try {
        const target = this.#session.target;
        const client = this.#session.dataClient(target);
        const request = {
          group: this.#o.group,
          nodeId: this.#o.nodeId,
          shardId,
          batchSize: options.batchSize ?? 100,
          afterId,
          sessionToken: this.#session.sessionToken,
        };
        if (!this.#noDataPages.has(target)) {
          // A page per message: small records cost a fraction of a message each.
          try {
            for await (const page of client.fetchShardDataPages(request, { signal })) {
              for (const rec of page.records) {
                afterId = rec.id;
                attempt = 0;
                yield rec;
              }
            }
            return;
          } catch (e) {
            // A replica older than FetchShardDataPages: use FetchShardData from now on.
            if (signal.aborted || ConnectError.from(e).code !== Code.Unimplemented) throw e;
            this.#noDataPages.add(target);
            request.afterId = afterId;
          }
        }
        for await (const rec of client.fetchShardData(request, { signal })) {
          afterId = rec.id;
          attempt = 0;
          yield rec;
        }
        return;
      } catch (e) {
        if (signal.aborted) throw new WorkerError("closed", "fetch aborted", { cause: e });
        const ce = ConnectError.from(e);
        const dataError = ce.metadata.get("x-shard-data-error");
        if (ce.code === Code.FailedPrecondition && dataError !== null)
          throw new WorkerError("failed_precondition", `data source (${dataError}): ${ce.rawMessage}`, {
            cause: ce,
          });
        if (ce.code === Code.FailedPrecondition || ce.code === Code.PermissionDenied) {
          throw new WorkerError("not_owner", ce.rawMessage, { cause: ce });
        }
        if (ce.code === Code.InvalidArgument)
          throw new WorkerError("invalid_options", ce.rawMessage, { cause: ce });
        if (attempt >= 8) throw new WorkerError("unavailable", ce.rawMessage, { cause: ce });
        await sleep(backoffDelay(attempt, this.#o.backoff) + 50, signal).catch(() => undefined);
      }
    }
  }

  /**
   * Every event from now on, until the worker closes. Each call gets its own iterator; a
   * consumer that falls more than 1,000 events behind loses the oldest.
   */
  events(): AsyncIterable<WorkerEvent> {
    if (this.#closed !== undefined) {
      const ch = this.#hub.subscribe();
      ch.close();
      return ch;
    }
    return this.#hub.subscribe();
  }

  /** Resolves when the worker has closed: undefined after close(), else the error that ended it. */
  closed(): Promise<Error | undefined> {
    return new Promise((resolve) => {
      if (this.#closed !== undefined) {
        void this.#closed.then(resolve);
        return;
      }
      const ch = this.events();
      void (async () => {
        for await (const e of ch) if (e.type === "closed") return resolve(e.error);
        resolve(this.#closeError);
      })();
    });
  }

  /**
   * Closes the worker: stops every shard handler (waiting for them to return), tells the
   * leader, waits briefly for the clean end of the stream, and closes the connection and
   * every timer. Idempotent (the first call's options apply).
   *
   * - `close()`: a graceful leave. The member is removed at once and its shards move to the
   *   others in a new version (not after a session timeout).
   * - `close({ restart: true })`: a planned restart (deploy, rolling update). The shards are
   *   released but the membership stays for the coordinator's restart grace: the next
   *   process with the same node id gets the same shards back with no new version, so a
   *   rolling restart of every worker of a group causes no rebalance at all.
   *
   * @example
   * ```ts
   * process.once("SIGTERM", () => void worker.close({ restart: true }));
   * ```
   */
  close(options: { restart?: boolean } = {}): Promise<void> {
    this.#closed ??= (async () => {
      // From here on nothing may start again, whatever the leader says.
      this.#session.retire();
      this.#shards.retire(performance.now());
      this.#tasks.retire();
      await Promise.all([this.#shards.idle(), this.#tasks.idle()]);
      // Every handler returned (and each task's outcome was sent): the leader may hand our
      // shards and tasks on at once.
      const restart = options.restart === true && this.#closeError === undefined;
      await this.#session.leave(restart ? "close({ restart: true })" : "close()", restart);
      this.#closing.abort(new WorkerError("closed", "worker closed"));
      await this.#session.close();
      this.#shards.close(this.#closeError);
      this.#tasks.close(this.#closeError);
      this.#hub.emit({ type: "closed", error: this.#closeError });
      this.#hub.close();
      return this.#closeError;
    })();
    return this.#closed.then(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Joins a worker group: connects to the leading coordinator (any replica may be listed) and
 * resolves once the leader welcomed this worker.
 *
 * @example
 * ```ts
 * import { connectWorker } from "@org/worker-sdk";
 * const worker = await connectWorker({ coordinators: ["127.0.0.1:50051"], group: "billing", nodeId: "billing-7" });
 * await worker.runShards(async (shard, signal) => {
 *   for await (const rec of worker.fetchShardData(shard, { signal })) console.log(shard.id, rec.id);
 * });
 * ```
 */
export async function connectWorker(options: WorkerOptions): Promise<Worker> {
  const worker = new Worker(resolveWorkerOptions(options));
  await worker.start();
  return worker;
}
