import { Channel } from "./channel.js";
import type { Phase } from "./ownership.js";

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

/** What happens to a worker, as data (see `Worker.events`). */
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

/**
 * Where the session and the runners report to: event subscribers (each with its own bounded
 * channel) and the user's log callback, which must never break the worker.
 */
export class EventHub {
  readonly #subscribers = new Set<Channel<WorkerEvent>>();
  readonly #onLog: (entry: Readonly<Record<string, unknown>>) => void;
  readonly #fields: Readonly<Record<string, unknown>>;
  #closed = false;

  constructor(
    onLog: (entry: Readonly<Record<string, unknown>>) => void,
    fields: Readonly<Record<string, unknown>>,
  ) {
    this.#onLog = onLog;
    this.#fields = fields;
  }

  /** A new subscription; a consumer that falls more than 1,000 events behind loses the oldest. */
  subscribe(): Channel<WorkerEvent> {
    const ch = new Channel<WorkerEvent>(1000);
    if (this.#closed) ch.close();
    else this.#subscribers.add(ch);
    return ch;
  }

  emit(e: WorkerEvent): void {
    for (const s of this.#subscribers) s.push(e);
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
