import type { ControlCommand, TaskDispatch } from "@org/proto";
import type { AssignmentView } from "./ownership.js";
import type { HeartbeatLoad, SessionRunner, WelcomeInfo } from "./session-runner.js";

/** The session's runners as one: each call goes to every runner, in the order they were added. */
export class RunnerSet {
  readonly #runners: SessionRunner[] = [];

  add(runner: SessionRunner): void {
    this.#runners.push(runner);
  }

  welcomed(info: WelcomeInfo, now: number): void {
    for (const r of this.#runners) r.welcomed(info, now);
  }

  view(view: AssignmentView, now: number, ack: boolean): void {
    for (const r of this.#runners) r.view(view, now, ack);
  }

  confirmed(now: number): void {
    for (const r of this.#runners) r.confirmed(now);
  }

  fenced(now: number): void {
    for (const r of this.#runners) r.fenced(now);
  }

  recorded(finals: readonly { readonly taskId: string; readonly attempt: number }[]): void {
    if (finals.length === 0) return;
    for (const r of this.#runners) r.recorded?.(finals);
  }

  tick(now: number): void {
    for (const r of this.#runners) r.tick(now);
  }

  task(dispatch: TaskDispatch): void {
    for (const r of this.#runners) r.task?.(dispatch);
  }

  /** Every runner's held task ids (for Hello). */
  heldTaskIds(): string[] {
    return this.#runners.flatMap((r) => r.heldTaskIds?.() ?? []);
  }

  /** The runners' figures, summed. */
  load(): Required<HeartbeatLoad> {
    const sum = { runningShards: 0, runningTasks: 0, queueLength: 0 };
    for (const r of this.#runners) {
      const l = r.heartbeatLoad();
      sum.runningShards += l.runningShards ?? 0;
      sum.runningTasks += l.runningTasks ?? 0;
      sum.queueLength += l.queueLength ?? 0;
    }
    return sum;
  }

  /** The reply of the first runner that handles `command`; a refusal when none does. */
  command(command: ControlCommand): { ok: boolean; message: string } {
    for (const r of this.#runners) {
      const reply = r.command?.(command);
      if (reply !== undefined) return reply;
    }
    return { ok: false, message: "not supported by this SDK version" };
  }
}
