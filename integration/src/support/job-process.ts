import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { WorkerEvent } from "../drill/timeline.js";
import { withParentDeathSignal } from "../harness/parent-death-signal.js";
import { loopbackHost, type ProcessHost } from "../harness/process-host.js";
import { trackChild } from "../harness/process-registry.js";
import { ArrivalWaiter } from "./arrival-waiter.js";
import { parseEventLine } from "./event-line.js";

/** The example dataset job (built by `pnpm build`): a real worker process using the SDK. */
export const datasetJob = fileURLToPath(new URL("../../../examples/dist/dataset-job.js", import.meta.url));

/** One JSON line the job printed; `t` is its `time` in epoch ms (the drill timeline's type). */
export type JobEvent = WorkerEvent & { readonly [key: string]: unknown };

/**
 * A dataset-job process whose event lines are collected as they arrive. Each line is
 * stamped with `incarnation` when given, so several processes that run one after another
 * with the same node id stay apart on the drill timeline.
 */
export class JobProcess {
  readonly node: string;
  readonly host: ProcessHost;
  readonly incarnation: number | undefined;
  readonly events: JobEvent[] = [];
  readonly stderr: string[] = [];
  readonly #child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly #waiter = new ArrivalWaiter<JobEvent>(this.events);

  constructor(args: {
    node: string;
    group: string;
    coordinators: readonly string[];
    itemMs?: number;
    loop?: boolean;
    checkpointEtcd?: readonly string[];
    checkpointPrefix?: string;
    waitForSignal?: boolean;
    /** Where it runs (e.g. a virtual network's host); default this machine. */
    host?: ProcessHost;
    /** Stamped on every event line (see the class comment). */
    incarnation?: number;
    /** More dataset-job flags (e.g. `--on-sigterm restart`). */
    extraArgs?: readonly string[];
  }) {
    this.node = args.node;
    this.host = args.host ?? loopbackHost;
    this.incarnation = args.incarnation;
    const onHost = this.host.command(process.execPath, [
      datasetJob,
      "--node",
      args.node,
      "--group",
      args.group,
      "--coordinators",
      args.coordinators.join(","),
      "--item-ms",
      String(args.itemMs ?? 20),
      ...(args.loop === false ? [] : ["--loop"]),
      ...(args.extraArgs ?? []),
      ...(args.waitForSignal === true ? ["--wait-for-signal"] : []),
      ...(args.checkpointEtcd === undefined
        ? []
        : [
            "--checkpoint-etcd",
            args.checkpointEtcd.join(","),
            "--checkpoint-prefix",
            args.checkpointPrefix ?? "/checkpoints/",
          ]),
    ]);
    const cmd = withParentDeathSignal(onHost.command, onHost.args);
    this.#child = spawn(cmd.command, [...cmd.args], { stdio: ["ignore", "pipe", "pipe"] });
    trackChild(this.#child);
    this.exited = new Promise((resolve) => this.#child.once("exit", (code) => resolve(code)));
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        const e = parseEventLine<JobEvent>(line);
        this.events.push(this.incarnation === undefined ? e : { ...e, incarnation: this.incarnation });
      } catch {
        this.stderr.push(line);
      }
      this.#waiter.arrived();
    });
    createInterface({ input: this.#child.stderr as NodeJS.ReadableStream }).on("line", (l) =>
      this.stderr.push(l),
    );
  }

  waitFor(pred: (e: JobEvent) => boolean, timeoutMs = 15_000, from = 0): Promise<JobEvent> {
    return this.#waiter.waitFor(
      pred,
      timeoutMs,
      from,
      () => `last job events: ${JSON.stringify(this.events.slice(-5))} ${this.stderr.slice(-5).join("\n")}`,
    );
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.#child.pid === undefined || !this.running) return;
    try {
      process.kill(this.#child.pid, sig);
    } catch {
      // exited between the check and the signal
    }
  }

  async stop(): Promise<void> {
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const t = setTimeout(() => this.signal("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(t);
  }
}
