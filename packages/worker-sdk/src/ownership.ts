/**
 * The worker's ownership state machine (pure: no timers, no I/O; the caller passes time
 * and carries out the actions it returns). It enforces the cooperative handoff:
 *
 * - a shard the latest version no longer gives us is stopped at once, whatever the phase;
 *   so is every shard when the shard count or strategy changes (shard ids change meaning);
 * - a pending version is released (`release`) only once every stop has completed;
 * - a gained shard starts only when its version is active, the session is not fenced,
 *   nothing with that id is still stopping, and the optional stability window has passed;
 * - views arrive in leader order: one from a lower leader epoch, or with a lower version in
 *   the same epoch, is ignored (the session rejects and reports those before they get here;
 *   this is the last line). A higher epoch may carry a lower version: it is the new truth.
 */

/** Where a version stands. */
export type Phase = "none" | "pending" | "active";

/** The assignment as the leader announced it to this worker. */
export interface AssignmentView {
  /** The epoch of the leader that announced it (not necessarily the one that wrote it). */
  readonly leaderEpoch: number;
  readonly version: number;
  readonly phase: Phase;
  readonly totalShards: number;
  /** This worker's shards in `version`, ascending. */
  readonly shards: readonly number[];
  readonly strategy: string;
}

/** Start a version's gained shards only after it stayed active this long (either bound met). */
export interface StabilityWindow {
  /** Heartbeat acks of the same active version. @default 0 */
  readonly heartbeats: number;
  /** Milliseconds since the version was first seen active. @default 0 */
  readonly ms: number;
}

/** What the caller must do now. */
export interface OwnershipActions {
  /** Shards to abort and await. */
  readonly stop: readonly number[];
  /** Shards to start (of `totalShards`, in `version`). */
  readonly start: readonly number[];
  /** Send Release for this version (every stop it needed has completed). */
  readonly release: number | undefined;
}

const none: OwnershipActions = { stop: [], start: [], release: undefined };

export class Ownership {
  readonly #window: StabilityWindow;
  #latest: AssignmentView | undefined;
  #activeSince: number | undefined;
  #activeAcks = 0;
  /** The (epoch, version) last released on this session. */
  #released: string | undefined;
  #fenced = true; // nothing may run before the first confirmation of our session
  readonly #running = new Set<number>();
  readonly #stopping = new Set<number>();
  #runningShape: { totalShards: number; strategy: string } | undefined;

  constructor(window: StabilityWindow = { heartbeats: 0, ms: 0 }) {
    this.#window = window;
  }

  get latest(): AssignmentView | undefined {
    return this.#latest;
  }

  get fenced(): boolean {
    return this.#fenced;
  }

  /** Shards whose handlers run now (none while fenced). */
  get running(): readonly number[] {
    return [...this.#running].sort((a, b) => a - b);
  }

  get stopping(): readonly number[] {
    return [...this.#stopping].sort((a, b) => a - b);
  }

  /** The shard count the running shards belong to. */
  get runningTotalShards(): number {
    return this.#runningShape?.totalShards ?? 0;
  }

  /** Whether `shardId` (of `totalShards`) runs here now. */
  runs(shardId: number, totalShards: number): boolean {
    return !this.#fenced && this.#runningShape?.totalShards === totalShards && this.#running.has(shardId);
  }

  /** The leader announced `view` (Welcome, Assignment or HeartbeatAck); `ack` counts toward the window. */
  observe(view: AssignmentView, now: number, ack = false): OwnershipActions {
    const prev = this.#latest;
    if (prev !== undefined && Ownership.older(view, prev)) return none; // stale
    if (prev === undefined || view.version !== prev.version || view.phase !== prev.phase) {
      this.#activeSince = view.phase === "active" ? now : undefined;
      this.#activeAcks = 0;
    }
    if (ack && view.phase === "active") this.#activeAcks += 1;
    this.#latest = view;
    return this.reconcile(now);
  }

  /** Whether `a` comes before `b` in leader order (a lower epoch, or a lower version in the same epoch). */
  static older(a: AssignmentView, b: AssignmentView): boolean {
    return a.leaderEpoch < b.leaderEpoch || (a.leaderEpoch === b.leaderEpoch && a.version < b.version);
  }

  /** The session fence ran out: everything stops until the leader confirms us again. */
  fence(now: number): OwnershipActions {
    this.#fenced = true;
    return this.reconcile(now);
  }

  /** The leader confirmed our session (welcome or ack within the fence). */
  confirm(now: number): OwnershipActions {
    this.#fenced = false;
    return this.reconcile(now);
  }

  /**
   * A new stream was opened: a Release sent on the old one may have been lost, so a
   * pending version is released again (the leader treats repeats as no-ops).
   */
  newSession(): void {
    this.#released = undefined;
  }

  /**
   * The leader did not recognise our session and started a new incarnation of this node:
   * it starts from nothing. Every running shard stops, the last view is forgotten, and nothing
   * runs until the leader confirms the new session (and each stop has completed).
   */
  newIncarnation(now: number): OwnershipActions {
    this.#latest = undefined;
    this.#activeSince = undefined;
    this.#activeAcks = 0;
    this.#released = undefined;
    this.#fenced = true;
    return this.reconcile(now);
  }

  /** A shard's handler has returned after a stop. */
  stopped(shardId: number, now: number): OwnershipActions {
    this.#stopping.delete(shardId);
    return this.reconcile(now);
  }

  /** Computes the actions the current state calls for, and records them as taken. */
  reconcile(now: number): OwnershipActions {
    const v = this.#latest;
    const stop: number[] = [];
    const reshaped =
      v !== undefined &&
      this.#runningShape !== undefined &&
      (this.#runningShape.totalShards !== v.totalShards || this.#runningShape.strategy !== v.strategy);
    const keep = new Set(v?.shards ?? []);
    for (const s of this.#running) {
      if (this.#fenced || reshaped || !keep.has(s)) stop.push(s);
    }
    for (const s of stop) {
      this.#running.delete(s);
      this.#stopping.add(s);
    }
    if (this.#running.size === 0) this.#runningShape = undefined;
    let release: number | undefined;
    if (v !== undefined && v.phase === "pending" && this.#stopping.size === 0) {
      const key = `${v.leaderEpoch}:${v.version}`;
      if (key !== this.#released) {
        release = v.version;
        this.#released = key;
      }
    }
    const start: number[] = [];
    if (v !== undefined && v.phase === "active" && !this.#fenced && this.#stable(now)) {
      // Shards of the old shape must all have stopped before any of the new shape starts.
      const shapeClear = this.#runningShape !== undefined || this.#stopping.size === 0;
      if (shapeClear) {
        for (const s of v.shards) {
          if (!this.#running.has(s) && !this.#stopping.has(s)) start.push(s);
        }
      }
      for (const s of start) this.#running.add(s);
      if (this.#running.size > 0) this.#runningShape = { totalShards: v.totalShards, strategy: v.strategy };
    }
    stop.sort((a, b) => a - b);
    return { stop, start, release };
  }

  #stable(now: number): boolean {
    const w = this.#window;
    if (w.heartbeats <= 0 && w.ms <= 0) return true;
    if (w.heartbeats > 0 && this.#activeAcks >= w.heartbeats) return true;
    if (w.ms > 0 && this.#activeSince !== undefined && now - this.#activeSince >= w.ms) return true;
    return false;
  }
}
