import { shardOf } from "@org/proto";
import { WorkerError } from "./errors.js";
import { type AssignmentView, Ownership, type OwnershipActions } from "./ownership.js";
import type { HeartbeatLoad, SessionPort, SessionRunner, WelcomeInfo } from "./session.js";
import type { ShardStanding } from "./task-slots.js";
import type { EventHub, Shard, ShardHandler, WorkerAssignment } from "./worker-event.js";
import type { ResolvedWorkerOptions } from "./worker-options.js";

interface RunningHandler {
  readonly shard: Shard;
  readonly ac: AbortController;
  readonly done: Promise<void>;
}

/**
 * Runs the user's shard handlers as the {@link Ownership} state machine says: starts a shard
 * when it is owned in an active version and the session is confirmed, aborts it the moment it
 * is lost or the session fenced, and sends Release once every stop a pending version needs
 * has completed. It learns what the leader says only through the session (views, confirms,
 * fences), and speaks to the leader only through the session's port.
 */
export class ShardRunner implements SessionRunner {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #port: SessionPort;
  readonly #ownership: Ownership;
  readonly #handlers = new Map<number, RunningHandler>();
  #handler: ShardHandler | undefined;
  #runDone: PromiseWithResolvers<void> | undefined;
  #strategy = "";
  #retiring = false;

  constructor(o: ResolvedWorkerOptions, hub: EventHub, port: SessionPort) {
    this.#o = o;
    this.#hub = hub;
    this.#port = port;
    this.#ownership = new Ownership(o.stabilityWindow);
  }

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

  /** Whether the shard of `taskId` runs here now (the caller checked the session fence). */
  owns(taskId: number | bigint | string): boolean {
    const total = this.#ownership.runningTotalShards;
    if (total === 0) return false;
    return this.#ownership.runs(shardOf(taskId, total), total);
  }

  /**
   * Where the shard of `taskId` stands for a task dispatched under assignment `version`:
   * running here, not (yet) running but possibly ours, or given to someone else in a view
   * at least as new. The shard is `shardOf(taskId, totalShards)` of the version considered,
   * as the leader places it: under `modulo` a reshape changes it.
   */
  standing(taskId: string, version: number): ShardStanding {
    const total = this.#ownership.runningTotalShards;
    if (total > 0 && this.#ownership.runs(shardOf(taskId, total), total)) return "runs";
    const v = this.#ownership.latest;
    if (v === undefined || v.version < version || v.totalShards === 0) return "wait";
    return v.shards.includes(shardOf(taskId, v.totalShards)) ? "wait" : "lost";
  }

  /** Starts running `handler` for every owned shard; resolves once {@link close} was called. */
  run(handler: ShardHandler): Promise<void> {
    if (this.#handler !== undefined)
      throw new WorkerError("invalid_options", "runShards may only be called once");
    this.#handler = handler;
    this.#runDone = Promise.withResolvers<void>();
    const { promise } = this.#runDone;
    const v = this.#ownership.latest;
    if (v !== undefined) {
      for (const id of this.#ownership.running)
        this.#launch({ id, totalShards: this.#ownership.runningTotalShards, version: v.version });
    }
    return promise;
  }

  // ---- SessionRunner ---------------------------------------------------------------------

  welcomed(info: WelcomeInfo, now: number): void {
    if (!info.newIncarnation) {
      this.#ownership.newSession();
      return;
    }
    // The leader did not know our session: whatever we run may be someone else's by now.
    this.#hub.log({
      event: "new_incarnation",
      incarnation: info.incarnation,
      coordinator: info.coordinator,
      stopping: this.#ownership.running,
    });
    this.#apply(this.#ownership.newIncarnation(now));
  }

  view(view: AssignmentView, now: number, ack: boolean): void {
    if (view.strategy !== "") this.#strategy = view.strategy;
    const v = view.strategy === "" ? { ...view, strategy: this.#strategy } : view;
    const before = this.#ownership.latest;
    this.#apply(this.#ownership.observe(v, now, ack));
    const after = this.#ownership.latest;
    if (
      after !== before &&
      (before === undefined || after?.version !== before.version || after.phase !== before.phase)
    ) {
      this.#hub.log({
        event: "assignment",
        version: after?.version,
        phase: after?.phase,
        shards: after?.shards,
        totalShards: after?.totalShards,
      });
      this.#hub.emit({ type: "assignment", assignment: this.assignment });
    }
  }

  confirmed(now: number): void {
    if (this.#retiring) return;
    this.#apply(this.#ownership.confirm(now));
  }

  fenced(now: number): void {
    this.#apply(this.#ownership.fence(now));
  }

  tick(now: number): void {
    if (this.#o.stabilityWindow.ms > 0) this.#apply(this.#ownership.reconcile(now));
  }

  heartbeatLoad(): HeartbeatLoad {
    return { runningShards: this.#handlers.size };
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** From here on nothing may start again, whatever the leader says: stops every handler. */
  retire(now: number): void {
    this.#retiring = true;
    this.#apply(this.#ownership.fence(now));
  }

  /** Resolves when every handler has returned. */
  async idle(): Promise<void> {
    await Promise.all([...this.#handlers.values()].map((h) => h.done));
  }

  /** Settles the promise runShards returned: resolved, or rejected with the error that ended the worker. */
  close(error: Error | undefined): void {
    if (error === undefined) this.#runDone?.resolve();
    else this.#runDone?.reject(error);
  }

  // ---- handlers --------------------------------------------------------------------------

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
        this.#hub.log({ event: "shard_stop_overdue", shard: id, afterMs: this.#o.stopTimeoutMs });
        this.#hub.emit({ type: "shard_stop_overdue", shard: h.shard });
      }, this.#o.stopTimeoutMs);
      void h.done.finally(() => {
        clearTimeout(overdue);
        this.#handlers.delete(id);
        this.#hub.emit({ type: "shard_stopped", shard: h.shard });
        this.#apply(this.#ownership.stopped(id, performance.now()));
      });
    }
    if (v !== undefined && this.#handler !== undefined) {
      for (const id of actions.start) this.#launch({ id, totalShards: v.totalShards, version: v.version });
    }
    if (actions.release !== undefined) {
      this.#port.send({ case: "release", value: { version: BigInt(actions.release), shardIds: [] } });
      this.#hub.log({ event: "released", version: actions.release });
      this.#hub.emit({ type: "released", version: actions.release });
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
        if (!ac.signal.aborted)
          this.#hub.log({ event: "shard_handler_failed", shard: shard.id, err: String(e) });
      }
    })();
    this.#handlers.set(shard.id, { shard, ac, done });
    this.#hub.log({
      event: "shard_started",
      shard: shard.id,
      totalShards: shard.totalShards,
      version: shard.version,
    });
    this.#hub.emit({ type: "shard_started", shard });
  }
}
