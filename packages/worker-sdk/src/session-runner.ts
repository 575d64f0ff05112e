import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ControlCommand, TaskDispatch, WorkerMessageSchema } from "@org/proto";
import type { AssignmentView } from "./ownership.js";

/*
 * The seam between the session (one conversation with the leader) and the runners that do
 * work under it: shards today, tasks next. The session delivers what the leader says (views,
 * confirmations, fences, commands, task dispatches); runners answer through a SessionPort.
 */

/** A message to the leader, without the sequence numbers the session adds. */
export type Outbound = MessageInitShape<typeof WorkerMessageSchema>["kind"];

/** What a runner may ask of the session. */
export interface SessionPort {
  /** Sends on the current stream; dropped when there is none (the next Hello resynchronises). */
  send(kind: Outbound): void;
}

/** The leader's Welcome, as runners see it. */
export interface WelcomeInfo {
  readonly coordinator: string;
  readonly leaderEpoch: number;
  readonly resumed: boolean;
  readonly incarnation: number;
  /**
   * The leader did not recognise the session this process already had: this is a new
   * incarnation, which starts from nothing (every piece of work stops first).
   */
  readonly newIncarnation: boolean;
}

/** What a runner adds to each heartbeat. */
export interface HeartbeatLoad {
  readonly runningShards?: number;
  readonly runningTasks?: number;
  readonly queueLength?: number;
}

/**
 * Something that runs work under the session: the shard runner today, the task runner next.
 * The session calls it, in this order for a Welcome: `welcomed`, `view` (when the Welcome
 * carries an assignment), `confirmed`. Every call is synchronous and must not throw.
 */
export interface SessionRunner {
  /** A new stream was welcomed (before its assignment is delivered). */
  welcomed(info: WelcomeInfo, now: number): void;
  /** The leader announced an assignment view (Welcome, Assignment or HeartbeatAck), in leader order. */
  view(view: AssignmentView, now: number, ack: boolean): void;
  /** The leader confirmed the session within its fence: work may run. */
  confirmed(now: number): void;
  /** The session fence ran out: every piece of work must stop now. */
  fenced(now: number): void;
  /** The leader recorded these attempts' final reports (HeartbeatAck.recorded_finals). */
  recorded?(finals: readonly { readonly taskId: string; readonly attempt: number }[]): void;
  /** Periodic (every 50 ms), for time-based rules such as a stability window. */
  tick(now: number): void;
  /** Figures for the next heartbeat. */
  heartbeatLoad(): HeartbeatLoad;
  /** A control command; return the reply, or undefined when this runner does not handle it. */
  command?(command: ControlCommand): { ok: boolean; message: string } | undefined;
  /** A task dispatched to this worker. */
  task?(dispatch: TaskDispatch): void;
  /** Task ids for the next Hello's `running_task_ids`: what this runner still holds. */
  heldTaskIds?(): readonly string[];
}
