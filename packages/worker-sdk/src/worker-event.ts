import { Channel } from "./channel.js";
import type { Phase } from "./ownership.js";
import { metricsOfEvent, type WorkerMetric, type WorkerMetricsHook } from "./worker-metrics.js";

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

/** A worker event without its timestamp (what the SDK's parts emit). */
export type WorkerEventBody =
  | {
      /** A stream was welcomed by the leader. */
      readonly type: "connected";
      readonly coordinator: string;
      readonly leaderEpoch: number;
      /** The leader recognised our session (no new incarnation). */
      readonly resumed: boolean;
      /** This membership's incarnation (0 when the coordinator does not say). */
      readonly incarnation: number;
    }
  | {
      /**
       * A stream attempt ended: a welcomed stream was lost, or an attempt failed (a refused
       * connection, a follower naming the leader, no answer). `code` is the gRPC status name,
       * or NO_ACK / NO_WELCOME / UNRESPONSIVE / STALE_LEADER for our own reasons.
       */
      readonly type: "disconnected";
      readonly coordinator: string;
      readonly code: string;
      readonly message: string;
      /** `code: message`, for a log line. */
      readonly reason: string;
      /** Whether this stream had been welcomed. */
      readonly welcomed: boolean;
      /** The leader a follower named, when one did. */
      readonly leader: string | undefined;
    }
  | { readonly type: "assignment"; readonly assignment: WorkerAssignment }
  | {
      /**
       * A message from the leader was rejected: from a leader epoch lower than one already
       * seen (`stale_epoch`), or with a version lower than one acted on in the same epoch
       * (`stale_version`). Nothing was acted on, the session was not extended, and the
       * stream is dropped.
       */
      readonly type: "stale_view";
      readonly coordinator: string;
      readonly reason: "stale_epoch" | "stale_version";
      readonly leaderEpoch: number;
      readonly version: number | undefined;
      readonly seenEpoch: number;
      readonly actedVersion: number;
    }
  | { readonly type: "fenced" }
  | { readonly type: "shard_started"; readonly shard: Shard }
  | { readonly type: "shard_stopped"; readonly shard: Shard }
  | { readonly type: "shard_stop_overdue"; readonly shard: Shard }
  | { readonly type: "released"; readonly version: number }
  | { readonly type: "task_started"; readonly taskId: string; readonly attempt: number }
  | {
      /** An attempt ended here and was reported (`cancelled` also when it was given back unstarted). */
      readonly type: "task_finished";
      readonly taskId: string;
      readonly attempt: number;
      readonly state: "succeeded" | "failed" | "cancelled";
    }
  | {
      /** The leader set this worker's task slots (SET_CAPACITY); they are in force already. */
      readonly type: "capacity_changed";
      readonly capacity: number;
      readonly reason: string;
    }
  | {
      /**
       * An operator drained this worker (DRAIN): the leader gives it no new shards or tasks.
       * Finish what runs and call `close()` when you are ready to go.
       */
      readonly type: "drain_requested";
      readonly reason: string;
    }
  | {
      /**
       * An operator paused (`paused`) or resumed (`resumed`) the worker's group: while paused
       * the leader writes no new versions and dispatches no tasks; running shards go on.
       */
      readonly type: "paused" | "resumed";
      readonly reason: string;
    }
  | { readonly type: "closed"; readonly error: Error | undefined };

/** What happens to a worker, as data (see `Worker.events`); `at` is the wall-clock time in ms. */
export type WorkerEvent = WorkerEventBody & { readonly at: number };

/**
 * Where the session and the runners report to: event subscribers (each with its own bounded
 * channel) and the user's log callback, which must never break the worker.
 */
export class EventHub {
  readonly #subscribers = new Set<Channel<WorkerEvent>>();
  readonly #onLog: (entry: Readonly<Record<string, unknown>>) => void;
  readonly #fields: Readonly<Record<string, unknown>>;
  readonly #metrics: WorkerMetricsHook | undefined;
  #running = 0;
  #closed = false;

  constructor(
    onLog: (entry: Readonly<Record<string, unknown>>) => void,
    fields: Readonly<Record<string, unknown>>,
    metrics?: WorkerMetricsHook,
  ) {
    this.#onLog = onLog;
    this.#fields = fields;
    this.#metrics = metrics;
  }

  /** A new subscription; a consumer that falls more than 1,000 events behind loses the oldest. */
  subscribe(): Channel<WorkerEvent> {
    const ch = new Channel<WorkerEvent>(1000);
    if (this.#closed) ch.close();
    else this.#subscribers.add(ch);
    return ch;
  }

  /** Stamps `e` with the time and hands it to every subscriber. */
  emit(e: WorkerEventBody): void {
    const event: WorkerEvent = { ...e, at: Date.now() };
    for (const s of this.#subscribers) s.push(event);
    if (this.#metrics === undefined) return;
    if (e.type === "shard_started") this.#running += 1;
    else if (e.type === "shard_stopped") this.#running = Math.max(0, this.#running - 1);
    for (const m of metricsOfEvent(e, this.#running)) this.metric(m);
  }

  /** Hands one measurement to the `metrics` hook, if any (its exceptions are swallowed). */
  metric(m: WorkerMetric): void {
    if (this.#metrics === undefined) return;
    try {
      this.#metrics(m);
    } catch {
      // a metrics callback must not break the worker
    }
  }

  log(entry: Record<string, unknown>): void {
    try {
      this.#onLog({ time: new Date().toISOString(), ...this.#fields, ...entry });
    } catch {
      // a logging callback must not break the worker
    }
  }

  /** Ends every subscription; later subscriptions end at once. */
  close(): void {
    this.#closed = true;
    for (const s of this.#subscribers) s.close();
    this.#subscribers.clear();
  }
}
