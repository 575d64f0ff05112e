import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { withParentDeathSignal } from "../harness/parent-death-signal.js";
import { trackChild } from "../harness/process-registry.js";
import { ArrivalWaiter } from "./arrival-waiter.js";
import { parseEventLine } from "./event-line.js";

/** The example task worker (built by `pnpm build`): a real worker process running tasks with the SDK. */
export const taskWorkerScript = fileURLToPath(
  new URL("../../../examples/dist/task-worker.js", import.meta.url),
);

/** One JSON line the worker printed; `t` is its `time` in epoch ms. */
export interface TaskWorkerEvent {
  readonly t: number;
  readonly node: string;
  readonly event: "connected" | "task_start" | "task_step" | "task_end" | "closed";
  readonly task?: string;
  readonly attempt?: number;
  readonly outcome?: string;
}

/** A task-worker process whose event lines are collected as they arrive; SIGKILL-able. */
export class TaskWorkerProcess {
  readonly node: string;
  readonly events: TaskWorkerEvent[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  readonly #child: ChildProcess;
  readonly #closed: Promise<void>;
  readonly #waiter = new ArrivalWaiter<TaskWorkerEvent>(this.events);

  constructor(args: { node: string; group: string; coordinators: readonly string[]; capacity?: number }) {
    this.node = args.node;
    const cmd = withParentDeathSignal(process.execPath, [
      taskWorkerScript,
      "--node",
      args.node,
      "--group",
      args.group,
      "--coordinators",
      args.coordinators.join(","),
      "--capacity",
      String(args.capacity ?? 1),
    ]);
    this.#child = spawn(cmd.command, [...cmd.args], { stdio: ["ignore", "pipe", "pipe"] });
    trackChild(this.#child);
    this.exited = new Promise((resolve) => this.#child.once("exit", (code) => resolve(code)));
    // "close" comes after the exit and the end of its stdio: every line has been read.
    this.#closed = new Promise((resolve) => this.#child.once("close", () => resolve()));
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        this.events.push(parseEventLine<TaskWorkerEvent>(line));
      } catch {
        this.stderr.push(line);
      }
      this.#waiter.arrived();
    });
    createInterface({ input: this.#child.stderr as NodeJS.ReadableStream }).on("line", (l) =>
      this.stderr.push(l),
    );
  }

  waitFor(pred: (e: TaskWorkerEvent) => boolean, timeoutMs = 15_000): Promise<TaskWorkerEvent> {
    return this.#waiter.waitFor(
      pred,
      timeoutMs,
      0,
      () => `last events: ${JSON.stringify(this.events.slice(-5))} ${this.stderr.slice(-5).join("\n")}`,
    );
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Sends `sig` (SIGSTOP, SIGCONT...) when it still runs. */
  signal(sig: NodeJS.Signals): void {
    if (this.running && this.#child.pid !== undefined) process.kill(this.#child.pid, sig);
  }

  /** SIGKILL; resolves when the process is gone and every line it printed was read. */
  async kill(): Promise<void> {
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await this.#closed;
  }
}
