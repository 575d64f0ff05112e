import { monitorEventLoopDelay } from "node:perf_hooks";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  type Assignment as AssignmentMessage,
  AssignmentPhase,
  type DataRecord,
  type HeartbeatAck,
  ShardService,
  shardOf,
  type WorkerMessageSchema,
} from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { Channel } from "./channel.js";
import { WorkerError } from "./errors.js";
import { type AssignmentView, Ownership, type OwnershipActions, type Phase } from "./ownership.js";
import { SessionFence } from "./session-fence.js";
import { type ResolvedWorkerOptions, resolveWorkerOptions, type WorkerOptions } from "./worker-options.js";

/** A shard handed to a {@link ShardHandler}. */
export interface Shard {
  readonly id: number;
  readonly totalShards: number;
  /** The assignment version it was started under. */
  readonly version: number;
}

/** Processes one shard until `signal` aborts; must return promptly after that. */
export type ShardHandler = (shard: Shard, signal: AbortSignal) => Promise<void>;

/** The worker's assignment as it stands. */
export interface WorkerAssignment {
  readonly version: number;
  readonly totalShards: number;
  /** First owned shard, -1 when none (the classic single-shard view). */
  readonly shardId: number;
  /** Shards this worker owns in `version`. */
  readonly shards: readonly number[];
  readonly phase: Phase;
  /** Shards running here now: owned, active, and the session is not fenced. */
  readonly running: readonly number[];
}

/** What happens to a worker, as data (see {@link Worker.events}). */
export type WorkerEvent =
  | {
      readonly type: "connected";
      readonly coordinator: string;
      readonly leaderEpoch: number;
      readonly resumed: boolean;
    }
  | { readonly type: "disconnected"; readonly coordinator: string; readonly reason: string }
  | { readonly type: "assignment"; readonly assignment: WorkerAssignment }
  | { readonly type: "fenced" }
  | { readonly type: "shard_started"; readonly shard: Shard }
  | { readonly type: "shard_stopped"; readonly shard: Shard }
  | { readonly type: "shard_stop_overdue"; readonly shard: Shard }
  | { readonly type: "released"; readonly version: number }
  | { readonly type: "closed"; readonly error: Error | undefined };

type Outbound = MessageInitShape<typeof WorkerMessageSchema>;

interface RunningHandler {
  readonly shard: Shard;
  readonly ac: AbortController;
  readonly done: Promise<void>;
}

const clientVersion = "@org/worker-sdk/0.1.0";

function phaseOf(p: AssignmentPhase): Phase {
  return p === AssignmentPhase.ACTIVE ? "active" : p === AssignmentPhase.PENDING ? "pending" : "none";
}

function viewOf(a: AssignmentMessage): AssignmentView {
  return {
    version: Number(a.version),
    phase: phaseOf(a.phase),
    totalShards: a.totalShards,
    shards: [...a.shards],
    strategy: a.strategy,
  };
}

function viewOfAck(a: HeartbeatAck, strategy: string): AssignmentView {
  return {
    version: Number(a.shardVersion),
    phase: phaseOf(a.phase),
    totalShards: a.totalShards,
    shards: [...a.shards],
    strategy,
  };
}

/**
 * A member of a worker group. Create it with {@link connectWorker}.
 *
 * It holds one HeartbeatStream to the leading coordinator (following redirects, reconnecting
 * with full-jitter backoff), runs your shard handlers only while the shard is owned in an
 * active version and the session is confirmed, and stops them before the leader can hand
 * the shard to anyone else.
 */
export class Worker implements AsyncDisposable {
  readonly #o: ResolvedWorkerOptions;
  readonly #ownership: Ownership;
  readonly #fence = new SessionFence();
  readonly #closing = new AbortController();
  readonly #subscribers = new Set<Channel<WorkerEvent>>();
  readonly #handlers = new Map<number, RunningHandler>();
  readonly #managers = new Map<
    string,
    { manager: Http2SessionManager; client: Client<typeof ShardService> }
  >();
  readonly #eld = monitorEventLoopDelay({ resolution: 20 });
  #handler: ShardHandler | undefined;
  #runDone: { promise: Promise<void>; resolve: () => void } | undefined;
  #target: string;
  #out: Channel<Outbound> | undefined;
  #outSeq = 0n;
  #peerSeq = 0n;
  #sessionToken = "";
  #strategy = "";
  #heartbeatIntervalMs = 1000;
  #leaderEpoch = 0;
  #tick: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #closed: Promise<Error | undefined> | undefined;
  #closeError: Error | undefined;
  #welcomed: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #retiring = false;
  #connectedTo: string | undefined;
  #cpu = process.cpuUsage();
  #cpuAt = performance.now();

  /** @internal use {@link connectWorker} */
  constructor(options: ResolvedWorkerOptions) {
    this.#o = options;
    this.#ownership = new Ownership(options.stabilityWindow);
    this.#target = options.coordinators[0] ?? "";
  }

  /** @internal Starts the connection loop; resolves on the first Welcome. */
  async start(): Promise<void> {
    const { signal, connectTimeoutMs } = this.#o;
    if (signal?.aborted) throw new WorkerError("closed", "the signal was already aborted");
    const onAbort = () => void this.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#closing.signal.addEventListener("abort", () => signal?.removeEventListener("abort", onAbort), {
      once: true,
    });
    this.#eld.enable();
    const first = new Promise<void>((resolve, reject) => {
      this.#welcomed = { resolve, reject };
    });
    this.#tick = setInterval(() => this.#onTick(), 50);
    this.#loop = this.#connectLoop();
    const timer = setTimeout(
      () =>
        this.#welcomed?.reject(
          new WorkerError("unavailable", `no coordinator welcomed us within ${connectTimeoutMs} ms`),
        ),
      connectTimeoutMs,
    );
    try {
      await first;
    } catch (e) {
      await this.close();
      throw e;
    } finally {
      clearTimeout(timer);
      this.#welcomed = undefined;
    }
  }

  /** The current assignment (never undefined after connectWorker resolved, though maybe version 0). */
  get assignment(): WorkerAssignment {
    const v = this.#ownership.latest;
    const shards = v?.shards ?? [];
    return {
      version: v?.version ?? 0,
      totalShards: v?.totalShards ?? 0,
      shardId: shards[0] ?? -1,
      shards,
      phase: v?.phase ?? "none",
      running: this.#ownership.fenced ? [] : this.#ownership.running,
    };
  }

  /** The replica (host:port) of the current stream; undefined while reconnecting. */
  get coordinator(): string | undefined {
    return this.#connectedTo;
  }

  /** The leader epoch of the coordinator we last heard from. */
  get leaderEpoch(): number {
    return this.#leaderEpoch;
  }

  /**
   * Whether this worker may process `taskId` right now: its shard (`shardOf(taskId,
   * totalShards)`: integers modulo the shard count, other strings by 32-bit FNV-1a) runs here
   * in an active version and the session is not fenced.
   */
  owns(taskId: number | bigint | string): boolean {
    // Checked synchronously against the fence, not only by the periodic tick: after a
    // process pause, a handler's timer may run before the tick that would fence us.
    if (!this.#fence.valid(performance.now())) {
      this.#onTick();
      return false;
    }
    const total = this.#ownership.runningTotalShards;
    if (total === 0) return false;
    return this.#ownership.runs(shardOf(taskId, total), total);
  }

  /**
   * Runs `handler` for every shard this worker owns, starting each when its version is
   * active and aborting its signal the moment the shard is lost (or the session fenced).
   * Resolves when the worker closes and every handler has returned.
   *
   * @example
   * ```ts
   * await worker.runShards(async (shard, signal) => {
   *   for await (const rec of worker.fetchShardData(shard.id, { signal })) process(rec);
   * });
   * ```
   */
  runShards(handler: ShardHandler): Promise<void> {
    if (this.#handler !== undefined)
      throw new WorkerError("invalid_options", "runShards may only be called once");
    if (this.#closing.signal.aborted) return Promise.reject(new WorkerError("closed", "worker is closed"));
    this.#handler = handler;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#runDone = { promise, resolve };
    const v = this.#ownership.latest;
    if (v !== undefined) {
      for (const id of this.#ownership.running)
        this.#launch({ id, totalShards: this.#ownership.runningTotalShards, version: v.version });
    }
    return promise;
  }

  /**
   * Streams the records of `shard` (HTTP/2 flow control: the server produces only as fast as
   * you consume). After a transient failure it resumes after the last record received. Fails
   * with `WorkerError("not_owner")` when the shard is not ours in an active version.
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
        const stream = this.#client(this.#target).fetchShardData(
          {
            group: this.#o.group,
            nodeId: this.#o.nodeId,
            shardId,
            batchSize: options.batchSize ?? 100,
            afterId,
            sessionToken: this.#sessionToken,
          },
          { signal },
        );
        for await (const rec of stream) {
          afterId = rec.id;
          attempt = 0;
          yield rec;
        }
        return;
      } catch (e) {
        if (signal.aborted) throw new WorkerError("closed", "fetch aborted", { cause: e });
        const ce = ConnectError.from(e);
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
    const ch = new Channel<WorkerEvent>(1000);
    if (this.#closed !== undefined) ch.close();
    else this.#subscribers.add(ch);
    return ch;
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
   * Leaves gracefully: stops every shard handler (waiting for them), sends Leave so the leader
   * moves the shards at once, and closes the connection. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      // From here on nothing may start again, whatever the leader says.
      this.#retiring = true;
      const now = performance.now();
      this.#apply(this.#ownership.fence(now));
      await Promise.all([...this.#handlers.values()].map((h) => h.done));
      const out = this.#out;
      if (out !== undefined && !out.closed) {
        this.#send({ case: "leave", value: { reason: "close()" } });
        // Give the leader a moment to answer Leave with a clean end of stream.
        await Promise.race([this.#loopIdle(), sleep(1000, undefined).catch(() => undefined)]);
      }
      this.#closing.abort(new WorkerError("closed", "worker closed"));
      clearInterval(this.#tick);
      this.#eld.disable();
      await this.#loop?.catch(() => undefined);
      for (const { manager } of this.#managers.values()) manager.abort();
      this.#managers.clear();
      this.#runDone?.resolve();
      this.#emit({ type: "closed", error: this.#closeError });
      for (const s of this.#subscribers) s.close();
      this.#subscribers.clear();
      return this.#closeError;
    })();
    return this.#closed.then(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- connection ----------------------------------------------------------------------

  #client(target: string): Client<typeof ShardService> {
    let entry = this.#managers.get(target);
    if (entry === undefined) {
      const baseUrl = `http://${target}`;
      const manager = new Http2SessionManager(baseUrl, {
        pingIntervalMs: this.#o.pingIntervalMs,
        pingTimeoutMs: Math.max(2000, this.#o.pingIntervalMs / 2),
        pingIdleConnection: true,
        idleConnectionTimeoutMs: 60_000,
      });
      const transport = createGrpcTransport({ baseUrl, sessionManager: manager });
      entry = { manager, client: createClient(ShardService, transport) };
      this.#managers.set(target, entry);
    }
    return entry.client;
  }

  #streamDone: (() => void) | undefined;
  #loopIdle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#out === undefined) resolve();
      else this.#streamDone = resolve;
    });
  }

  async #connectLoop(): Promise<void> {
    const signal = this.#closing.signal;
    const { coordinators, backoff } = this.#o;
    let attempt = 0;
    let rotation = 0;
    let redirects = 0;
    while (!signal.aborted) {
      const target = this.#target;
      let welcomed = false;
      try {
        await this.#runStream(target, () => {
          attempt = 0;
          redirects = 0;
          welcomed = true;
        });
        this.#emit({ type: "disconnected", coordinator: target, reason: "stream ended" });
      } catch (e) {
        if (signal.aborted) break;
        const ce = ConnectError.from(e);
        const leader = ce.metadata.get("x-shard-leader");
        this.#log({
          event: "stream_failed",
          coordinator: target,
          code: Code[ce.code],
          message: ce.rawMessage,
          leader,
        });
        if (welcomed) this.#emit({ type: "disconnected", coordinator: target, reason: ce.rawMessage });
        if (ce.code === Code.InvalidArgument) {
          // Our group or node id is invalid: retrying cannot fix it.
          this.#fail(new WorkerError("refused", ce.rawMessage, { cause: ce }));
          break;
        }
        if (leader !== null && leader !== "" && leader !== target && redirects < 3) {
          redirects += 1;
          this.#target = leader;
          continue; // a follower named the leader: go straight there
        }
      }
      if (signal.aborted) break;
      // No leader named (or a redirect loop): rotate through the configured replicas.
      rotation = (rotation + 1) % coordinators.length;
      this.#target = coordinators[rotation] ?? target;
      redirects = 0;
      await sleep(backoffDelay(attempt, backoff), signal).catch(() => undefined);
      attempt += 1;
    }
  }

  /** One HeartbeatStream; resolves when it ends cleanly, throws on failure. Returns whether welcomed. */
  async #runStream(target: string, onWelcome: () => void): Promise<boolean> {
    const out = new Channel<Outbound>();
    const streamAbort = new AbortController();
    const onClose = () => streamAbort.abort();
    this.#closing.signal.addEventListener("abort", onClose, { once: true });
    this.#out = out;
    this.#outSeq = 0n;
    this.#peerSeq = 0n;
    const o = this.#o;
    const helloSentAt = performance.now();
    this.#send({
      case: "hello",
      value: {
        group: o.group,
        nodeId: o.nodeId,
        sessionToken: this.#sessionToken,
        labels: { ...o.labels },
        capacity: o.capacity,
        lastKnownVersion: BigInt(this.#ownership.latest?.version ?? 0),
        runningTaskIds: [],
        clientVersion,
      },
    });
    let welcomed = false;
    let heartbeat: NodeJS.Timeout | undefined;
    // A replica that is paused (SIGSTOP) still accepts TCP connections in the kernel, but never
    // answers: a reconnect must not wait on it past the self-fence. Resuming a session writes
    // nothing on the leader, so its Welcome is quick; a first join (etcd writes) gets no bound.
    const welcomeTimer =
      this.#sessionToken === ""
        ? undefined
        : setTimeout(
            () =>
              streamAbort.abort(
                new WorkerError(
                  "unavailable",
                  `no Welcome from ${target} within ${2 * this.#heartbeatIntervalMs} ms`,
                ),
              ),
            Math.max(500, 2 * this.#heartbeatIntervalMs),
          );
    let lastAckAt = performance.now();
    try {
      for await (const msg of this.#client(target).heartbeatStream(out, { signal: streamAbort.signal })) {
        this.#peerSeq = msg.seq;
        const now = performance.now();
        const kind = msg.kind;
        if (kind.case === "welcome") {
          clearTimeout(welcomeTimer);
          const w = kind.value;
          welcomed = true;
          this.#connectedTo = target;
          onWelcome();
          this.#sessionToken = w.sessionToken;
          this.#leaderEpoch = Number(w.leaderEpoch);
          this.#heartbeatIntervalMs = Math.max(50, w.heartbeatIntervalMs);
          this.#fence.configure(w.sessionTimeoutMs);
          this.#fence.welcomed(helloSentAt);
          this.#ownership.newSession();
          lastAckAt = now;
          this.#log({
            event: "welcomed",
            coordinator: target,
            leaderEpoch: this.#leaderEpoch,
            resumed: w.resumed,
            version: Number(w.assignment?.version ?? 0n),
          });
          this.#emit({
            type: "connected",
            coordinator: target,
            leaderEpoch: this.#leaderEpoch,
            resumed: w.resumed,
          });
          if (w.assignment !== undefined) this.#observe(viewOf(w.assignment), now, false);
          if (!this.#retiring) this.#apply(this.#ownership.confirm(now));
          heartbeat = setInterval(() => {
            if (performance.now() - lastAckAt > 3 * this.#heartbeatIntervalMs) {
              // Half-open: the connection looks fine but nothing answers. Drop it and reconnect.
              this.#log({
                event: "no_ack",
                coordinator: target,
                silentMs: Math.round(performance.now() - lastAckAt),
              });
              streamAbort.abort(new WorkerError("unavailable", "no heartbeat ack for 3 intervals"));
              return;
            }
            this.#sendHeartbeat();
          }, this.#heartbeatIntervalMs);
          this.#welcomed?.resolve();
          continue;
        }
        if (!welcomed) continue;
        switch (kind.case) {
          case "heartbeatAck": {
            const ack = kind.value;
            lastAckAt = now;
            if (!ack.accepted) break;
            // The ack's view first: confirming first would restart shards of a stale version.
            const acked = this.#fence.acked(ack.heartbeatSeq);
            this.#observe(viewOfAck(ack, this.#strategy), now, true);
            if (acked && this.#fence.valid(now) && !this.#retiring) {
              this.#apply(this.#ownership.confirm(now));
            }
            break;
          }
          case "assignment":
            this.#observe(viewOf(kind.value), now, false);
            break;
          case "command":
            this.#send({
              case: "commandAck",
              value: {
                commandId: kind.value.commandId,
                ok: false,
                message: "not supported by this SDK version",
              },
            });
            break;
          default:
            break;
        }
      }
      return welcomed;
    } finally {
      clearInterval(heartbeat);
      clearTimeout(welcomeTimer);
      this.#connectedTo = undefined;
      this.#closing.signal.removeEventListener("abort", onClose);
      out.close();
      if (this.#out === out) this.#out = undefined;
      this.#streamDone?.();
      this.#streamDone = undefined;
    }
  }

  #send(kind: Outbound["kind"]): void {
    const out = this.#out;
    if (out === undefined) return;
    this.#outSeq += 1n;
    out.push({ seq: this.#outSeq, ackSeq: this.#peerSeq, kind });
  }

  #sendHeartbeat(): void {
    const now = performance.now();
    const cpu = process.cpuUsage(this.#cpu);
    const elapsedMs = Math.max(1, now - this.#cpuAt);
    this.#cpu = process.cpuUsage();
    this.#cpuAt = now;
    const seq = this.#outSeq + 1n;
    this.#fence.sent(seq, now);
    let load = 0;
    try {
      load = this.#o.load?.() ?? 0;
    } catch {
      load = 0;
    }
    this.#send({
      case: "heartbeat",
      value: {
        nodeId: this.#o.nodeId,
        ts: BigInt(Date.now()),
        load,
        cpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
        memoryRssBytes: BigInt(process.memoryUsage.rss()),
        eventLoopDelayMs: this.#eld.percentile(99) / 1e6,
        runningTasks: 0,
        queueLength: 0,
        runningShards: this.#handlers.size,
      },
    });
    this.#eld.reset();
  }

  // ---- ownership -----------------------------------------------------------------------

  #observe(view: AssignmentView, now: number, ack: boolean): void {
    if (view.strategy !== "") this.#strategy = view.strategy;
    const v = view.strategy === "" ? { ...view, strategy: this.#strategy } : view;
    const before = this.#ownership.latest;
    this.#apply(this.#ownership.observe(v, now, ack));
    const after = this.#ownership.latest;
    if (
      after !== before &&
      (before === undefined || after?.version !== before.version || after.phase !== before.phase)
    ) {
      this.#log({
        event: "assignment",
        version: after?.version,
        phase: after?.phase,
        shards: after?.shards,
        totalShards: after?.totalShards,
      });
      this.#emit({ type: "assignment", assignment: this.assignment });
    }
  }

  #onTick(): void {
    const now = performance.now();
    if (!this.#ownership.fenced && !this.#fence.valid(now)) {
      this.#log({ event: "fenced", leaderEpoch: this.#leaderEpoch });
      this.#emit({ type: "fenced" });
      this.#apply(this.#ownership.fence(now));
      return;
    }
    if (this.#o.stabilityWindow.ms > 0) this.#apply(this.#ownership.reconcile(now));
  }

  #apply(actions: OwnershipActions): void {
    const v = this.#ownership.latest;
    for (const id of actions.stop) {
      const h = this.#handlers.get(id);
      if (h === undefined) {
        // Owned but no handler (runShards not called): nothing to wait for.
        queueMicrotask(() => this.#apply(this.#ownership.stopped(id, performance.now())));
        continue;
      }
      h.ac.abort(new WorkerError("not_owner", `shard ${id} is no longer owned here`));
      const overdue = setTimeout(() => {
        this.#log({ event: "shard_stop_overdue", shard: id, afterMs: this.#o.stopTimeoutMs });
        this.#emit({ type: "shard_stop_overdue", shard: h.shard });
      }, this.#o.stopTimeoutMs);
      void h.done.finally(() => {
        clearTimeout(overdue);
        this.#handlers.delete(id);
        this.#emit({ type: "shard_stopped", shard: h.shard });
        this.#apply(this.#ownership.stopped(id, performance.now()));
      });
    }
    if (v !== undefined && this.#handler !== undefined) {
      for (const id of actions.start) this.#launch({ id, totalShards: v.totalShards, version: v.version });
    }
    if (actions.release !== undefined) {
      this.#send({ case: "release", value: { version: BigInt(actions.release), shardIds: [] } });
      this.#log({ event: "released", version: actions.release });
      this.#emit({ type: "released", version: actions.release });
    }
  }

  #launch(shard: Shard): void {
    const handler = this.#handler;
    if (handler === undefined || this.#handlers.has(shard.id)) return;
    const ac = new AbortController();
    const done = (async () => {
      try {
        await handler(shard, ac.signal);
      } catch (e) {
        if (!ac.signal.aborted) this.#log({ event: "shard_handler_failed", shard: shard.id, err: String(e) });
      }
    })();
    this.#handlers.set(shard.id, { shard, ac, done });
    this.#log({
      event: "shard_started",
      shard: shard.id,
      totalShards: shard.totalShards,
      version: shard.version,
    });
    this.#emit({ type: "shard_started", shard });
  }

  #fail(e: Error): void {
    this.#closeError = e;
    this.#welcomed?.reject(e);
    void this.close();
  }

  #emit(e: WorkerEvent): void {
    for (const s of this.#subscribers) s.push(e);
  }

  #log(entry: Record<string, unknown>): void {
    try {
      this.#o.onLog({ time: new Date().toISOString(), group: this.#o.group, node: this.#o.nodeId, ...entry });
    } catch {
      // a logging callback must not break the worker
    }
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

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
