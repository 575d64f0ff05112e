import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  CommandKind,
  type ControlCommand,
  type TaskDispatch,
  TaskPlacement,
  TaskState,
  type TaskUpdateSchema,
} from "@org/proto";
import { WorkerError } from "./errors.js";
import type { AssignmentView } from "./ownership.js";
import type { HeartbeatLoad, SessionPort, SessionRunner, WelcomeInfo } from "./session-runner.js";
import { TaskError, type TaskErrorCode } from "./task-error.js";
import type { Task, TaskHandler } from "./task-handler.js";
import { type HeldTask, planSlots, type ShardStanding } from "./task-slots.js";
import type { EventHub } from "./worker-event.js";

type Update = MessageInitShape<typeof TaskUpdateSchema>;

/**
 * How long a final report the leader never said it recorded is kept at most, in ms: a valve
 * for memory, not the rule. The rule: a final report is kept (listed in Hello, sent again on
 * each new stream) until a heartbeat ack names its attempt in `recorded_finals`. A leader
 * acks heartbeats as soon as it reads them but writes the report a transaction later (and
 * a write can fail while etcd elects a leader); a leader that dies in between has it in no
 * record, and the next one would run the finished task again unless this worker repeats it.
 */
const unrecordedFinalMaxMs = 5 * 60_000;
/** Final reports kept at most (Hello stays small under a storm of short tasks). */
const maxFinals = 5000;

/** What the task runner needs to know of the shards (the shard runner answers). */
export interface ShardLookup {
  /** Where the shard of `taskId` stands here, for a task dispatched under assignment `version`. */
  standing(taskId: string, version: number): ShardStanding;
}

export interface TaskRunnerOptions {
  /** Task slots at start (Hello.capacity); SET_CAPACITY changes them. */
  readonly slots: number;
  /** How long a dispatch waits for `runTasks` before it is given back, in ms. */
  readonly handlerGraceMs: number;
  /**
   * Whether the session's fence holds right now, checked synchronously; when it does not,
   * the session is told at once (it then calls {@link TaskRunner.fenced}, aborting every
   * signal before this returns).
   */
  readonly fenceHolds: () => boolean;
}

/** One attempt this worker holds: waiting for a slot or its shard, or running. */
interface Attempt {
  readonly dispatch: TaskDispatch;
  readonly held: HeldTask;
  readonly receivedAt: number;
  /** Set once started. */
  run?: {
    readonly ac: AbortController;
    done: Promise<void>;
    progress?: { fraction: number; message: string };
  };
}

/** A final report the leader has not yet said it recorded. */
interface Final {
  readonly update: Update;
  /** When it was first sent (monotonic ms). */
  readonly at: number;
}

/**
 * Runs the tasks the leader dispatches to this worker, as a runner of the session beside the
 * shard runner: never more at once than its slots, each handler's signal aborted on cancel,
 * timeout, self-fence, a new incarnation, shard loss or close, and every attempt's outcome
 * reported as a TaskUpdate echoing its `(attempt, leaderEpoch)`.
 *
 * Final reports are kept until the leader says it recorded them (a heartbeat ack names the
 * attempt in `recorded_finals`): a report sent as a stream died, received by a leader that
 * died before writing it, or whose write failed while etcd elected a leader, would otherwise
 * be lost, and the task run again. Until then the task is listed in Hello as still held, and
 * its report is sent again on every new stream of the same incarnation.
 */
export class TaskRunner implements SessionRunner {
  readonly #o: TaskRunnerOptions;
  readonly #hub: EventHub;
  readonly #port: SessionPort;
  readonly #shards: ShardLookup;
  /** By task id; a task's next attempt waits in `#queue` while its previous one is busy. */
  readonly #running = new Map<string, Attempt>();
  #queue: Attempt[] = [];
  readonly #finals = new Map<string, Final>();
  #slots: number;
  #handler: TaskHandler | undefined;
  #runDone: PromiseWithResolvers<void> | undefined;
  #confirmed = false;
  #retiring = false;

  constructor(o: TaskRunnerOptions, hub: EventHub, port: SessionPort, shards: ShardLookup) {
    this.#o = o;
    this.#hub = hub;
    this.#port = port;
    this.#shards = shards;
    this.#slots = o.slots;
  }

  /** Task slots in force. */
  get slots(): number {
    return this.#slots;
  }

  /** Attempts whose handlers run now (or were aborted and have not returned yet). */
  get running(): number {
    return this.#running.size;
  }

  /** Starts running `handler` for every task dispatched here; resolves once {@link close} was called. */
  run(handler: TaskHandler): Promise<void> {
    if (this.#handler !== undefined)
      throw new WorkerError("invalid_options", "runTasks may only be called once");
    this.#handler = handler;
    this.#runDone = Promise.withResolvers<void>();
    this.#pump();
    return this.#runDone.promise;
  }

  /** The ids to list in Hello.running_task_ids: everything held or not yet reported. */
  heldTaskIds(): string[] {
    return [
      ...new Set([...this.#running.keys(), ...this.#queue.map((a) => a.held.id), ...this.#finals.keys()]),
    ];
  }

  // ---- SessionRunner ---------------------------------------------------------------------

  welcomed(info: WelcomeInfo, _now: number): void {
    if (info.newIncarnation) {
      // The leader requeues what the old incarnation held once it has stopped: drop it all.
      this.#finals.clear();
      const dropped = this.#queue;
      this.#queue = [];
      for (const a of dropped)
        this.#hub.log({ event: "task_dropped", task: a.held.id, attempt: a.held.attempt });
      this.#abortAll("new_incarnation", "the leader started a new incarnation of this worker");
      return;
    }
    // Same incarnation, maybe a new leader: repeat what it may have missed.
    for (const f of this.#finals.values()) this.#port.send({ case: "taskUpdate", value: f.update });
    for (const a of this.#running.values())
      if (a.run !== undefined && !a.run.ac.signal.aborted)
        this.#send(a, { state: TaskState.RUNNING, progress: a.run.progress?.fraction ?? 0 });
  }

  view(_view: AssignmentView, _now: number, _ack: boolean): void {
    this.#checkShards();
    this.#pump();
  }

  confirmed(now: number): void {
    if (this.#retiring) return;
    this.#confirmed = true;
    for (const [id, f] of this.#finals) {
      if (now - f.at < unrecordedFinalMaxMs) continue;
      this.#finals.delete(id);
      this.#hub.log({ event: "task_final_unrecorded", task: id, attempt: f.update.attempt });
    }
    this.#pump();
  }

  recorded(finals: readonly { readonly taskId: string; readonly attempt: number }[]): void {
    for (const r of finals) {
      const f = this.#finals.get(r.taskId);
      // Only that attempt's report: a later attempt of the same task may have ended since.
      if (f !== undefined && f.update.attempt === r.attempt) this.#finals.delete(r.taskId);
    }
  }

  fenced(_now: number): void {
    this.#confirmed = false;
    this.#abortAll("fenced", "the session fence ran out");
  }

  tick(now: number): void {
    for (const a of this.#running.values()) {
      const r = a.run;
      if (r === undefined || r.ac.signal.aborted) continue;
      if (a.dispatch.timeoutMs > 0 && now - a.receivedAt >= a.dispatch.timeoutMs) {
        this.#abort(a, "timeout", `attempt ${a.held.attempt} ran past ${a.dispatch.timeoutMs} ms`);
        continue;
      }
      if (r.progress !== undefined) {
        this.#send(a, {
          state: TaskState.RUNNING,
          progress: r.progress.fraction,
          message: r.progress.message,
        });
        r.progress = undefined;
      }
    }
    if (this.#handler === undefined && !this.#retiring) {
      const late = this.#queue.filter((a) => now - a.receivedAt >= this.#o.handlerGraceMs);
      for (const a of late) this.#giveBack(a, "this worker runs no task handler (runTasks was not called)");
    }
    this.#checkShards();
    this.#pump();
  }

  heartbeatLoad(): HeartbeatLoad {
    return { runningTasks: this.#running.size, queueLength: this.#queue.length };
  }

  command(c: ControlCommand): { ok: boolean; message: string } | undefined {
    switch (c.kind) {
      case CommandKind.CANCEL_TASK:
        return this.#cancel(c);
      case CommandKind.SET_CAPACITY: {
        const slots = c.capacity;
        this.#slots = slots;
        this.#hub.log({ event: "capacity_set", capacity: slots, reason: c.reason });
        this.#hub.emit({ type: "capacity_changed", capacity: slots, reason: c.reason });
        this.#pump();
        return { ok: true, message: `running at most ${slots} tasks at once` };
      }
      case CommandKind.DRAIN:
        this.#hub.log({ event: "drain_requested", reason: c.reason });
        this.#hub.emit({ type: "drain_requested", reason: c.reason });
        return { ok: true, message: "told the application (worker event drain_requested)" };
      default:
        return undefined;
    }
  }

  task(d: TaskDispatch): void {
    const held: HeldTask = {
      id: d.taskId,
      attempt: d.attempt,
      shardId: d.placement === TaskPlacement.SHARD ? d.shardId : undefined,
      shardVersion: Number(d.shardVersion),
    };
    const same = (a: Attempt) => a.held.id === held.id && a.held.attempt === held.attempt;
    const current = this.#running.get(held.id);
    if ((current !== undefined && same(current)) || this.#queue.some(same)) return; // repeated
    if (this.#retiring) {
      this.#sendFinal(held, d, { state: TaskState.CANCELLED, message: "the worker is closing" });
      return;
    }
    // A newer attempt supersedes whatever older one waits here.
    this.#queue = this.#queue.filter((a) => a.held.id !== held.id);
    this.#finals.delete(held.id);
    this.#queue.push({ dispatch: d, held, receivedAt: performance.now() });
    this.#pump();
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** From here on nothing starts: every handler is aborted, every waiting task given back. */
  retire(): void {
    this.#retiring = true;
    this.#confirmed = false;
    for (const a of this.#queue) this.#giveBack(a, "the worker is closing");
    this.#abortAll("closed", "the worker is closing");
  }

  /** Resolves when every handler has returned. */
  async idle(): Promise<void> {
    await Promise.all([...this.#running.values()].map((a) => a.run?.done));
  }

  /** Settles the promise runTasks returned. */
  close(error: Error | undefined): void {
    if (error === undefined) this.#runDone?.resolve();
    else this.#runDone?.reject(error);
  }

  // ---- attempts --------------------------------------------------------------------------

  #cancel(c: ControlCommand): { ok: boolean; message: string } {
    const matches = (a: Attempt) =>
      a.held.id === c.taskId && (c.attempt === 0 || a.held.attempt === c.attempt);
    const why = c.reason === "" ? "cancelled by the leader" : c.reason;
    const waiting = this.#queue.find(matches);
    if (waiting !== undefined) {
      this.#queue = this.#queue.filter((a) => a !== waiting);
      this.#sendFinal(waiting.held, waiting.dispatch, { state: TaskState.CANCELLED, message: why });
      return { ok: true, message: "cancelled before it started" };
    }
    const a = this.#running.get(c.taskId);
    if (a === undefined || !matches(a)) return { ok: true, message: "not running here" };
    this.#abort(a, "cancelled", why);
    return { ok: true, message: "handler signal aborted" };
  }

  #abortAll(code: TaskErrorCode, message: string): void {
    for (const a of this.#running.values()) this.#abort(a, code, message);
  }

  #abort(a: Attempt, code: TaskErrorCode, message: string): void {
    if (a.run === undefined || a.run.ac.signal.aborted) return;
    this.#hub.log({ event: "task_aborting", task: a.held.id, attempt: a.held.attempt, code, message });
    a.run.ac.abort(new TaskError(code, message));
  }

  /** Aborts started shard-placed tasks whose shard stopped running here. */
  #checkShards(): void {
    for (const a of this.#running.values()) {
      const s = a.held.shardId;
      if (s === undefined || a.run?.ac.signal.aborted !== false) continue;
      if (this.#shards.standing(a.held.id, a.held.shardVersion) !== "runs")
        this.#abort(a, "shard_lost", `shard ${s} is no longer running here`);
    }
  }

  #pump(): void {
    if (this.#queue.length === 0) return;
    const plan = planSlots(
      this.#queue.map((a) => a.held),
      this.#handler === undefined || !this.#confirmed || this.#retiring ? 0 : this.#slots,
      new Set(this.#running.keys()),
      (t) => this.#shards.standing(t.id, t.shardVersion),
    );
    if (plan.start.length === 0 && plan.giveBack.length === 0) return;
    const start = new Set(plan.start);
    const giveBack = new Set(plan.giveBack);
    const now = this.#queue;
    this.#queue = now.filter((a) => !start.has(a.held) && !giveBack.has(a.held));
    for (const a of now) {
      if (giveBack.has(a.held)) this.#giveBack(a, `shard ${a.held.shardId} is not owned here`);
      else if (start.has(a.held)) this.#start(a);
    }
  }

  #giveBack(a: Attempt, message: string): void {
    this.#queue = this.#queue.filter((x) => x !== a);
    this.#hub.log({ event: "task_given_back", task: a.held.id, attempt: a.held.attempt, message });
    this.#sendFinal(a.held, a.dispatch, { state: TaskState.CANCELLED, message });
  }

  #start(a: Attempt): void {
    const handler = this.#handler;
    if (handler === undefined) return;
    const ac = new AbortController();
    const d = a.dispatch;
    const run: NonNullable<Attempt["run"]> = {
      ac,
      done: Promise.resolve(),
    };
    const task: Task = {
      id: d.taskId,
      attempt: d.attempt,
      payload: d.payload,
      priority: d.priority,
      placement: d.placement === TaskPlacement.SHARD ? "shard" : "balanced",
      shardId: a.held.shardId,
      maxAttempts: d.maxAttempts,
      timeoutMs: d.timeoutMs,
      leaderEpoch: Number(d.leaderEpoch),
      createdAtMs: Number(d.createdAtMs),
      signal: ac.signal,
      valid: () => !ac.signal.aborted && this.#o.fenceHolds(),
      progress: (fraction, message) => {
        if (ac.signal.aborted) return;
        const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
        run.progress = { fraction: f, message: message ?? "" };
      },
    };
    a.run = run;
    this.#running.set(a.held.id, a);
    this.#send(a, { state: TaskState.RUNNING, progress: 0 });
    this.#hub.log({ event: "task_started", task: task.id, attempt: task.attempt });
    this.#hub.emit({ type: "task_started", taskId: task.id, attempt: task.attempt });
    run.done = (async () => {
      let update: Update;
      try {
        const out = await handler(task, ac.signal);
        const result = typeof out === "string" ? new TextEncoder().encode(out) : (out ?? new Uint8Array());
        update = { state: TaskState.SUCCEEDED, result };
      } catch (e) {
        if (ac.signal.aborted) {
          update = { state: TaskState.CANCELLED, message: TaskError.from(ac.signal.reason).message };
        } else {
          const err = TaskError.from(e);
          update = { state: TaskState.FAILED, message: err.message, retryable: err.retryable };
        }
      }
      this.#running.delete(a.held.id);
      this.#sendFinal(a.held, d, update);
      this.#pump();
    })();
  }

  #send(a: Attempt, u: Update): void {
    this.#port.send({
      case: "taskUpdate",
      value: { ...u, taskId: a.held.id, attempt: a.held.attempt, leaderEpoch: a.dispatch.leaderEpoch },
    });
  }

  #sendFinal(held: HeldTask, d: TaskDispatch, u: Update): void {
    const update: Update = { ...u, taskId: held.id, attempt: held.attempt, leaderEpoch: d.leaderEpoch };
    this.#finals.delete(held.id);
    this.#finals.set(held.id, { update, at: performance.now() });
    // Bounded: the oldest first (a Map iterates in insertion order).
    for (const id of this.#finals.keys()) {
      if (this.#finals.size <= maxFinals) break;
      this.#finals.delete(id);
    }
    this.#port.send({ case: "taskUpdate", value: update });
    const state = stateName(u.state);
    this.#hub.log({
      event: "task_finished",
      task: held.id,
      attempt: held.attempt,
      state,
      message: u.message,
    });
    this.#hub.emit({ type: "task_finished", taskId: held.id, attempt: held.attempt, state });
  }
}

function stateName(s: TaskState | undefined): "succeeded" | "failed" | "cancelled" {
  return s === TaskState.SUCCEEDED ? "succeeded" : s === TaskState.FAILED ? "failed" : "cancelled";
}
