import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import {
  EtcdHealthTimeoutError,
  EtcdMemberStateError,
  EtcdPortInUseError,
  EtcdStartError,
} from "./errors.js";
import { pollUntilHealthy } from "./etcd-health.js";
import { DEFAULT_HEALTH_TIMEOUT_MS, type EtcdMember, type WaitHealthyOptions } from "./etcd-member.js";
import { readLogTail } from "./log-tail.js";
import { withParentDeathSignal } from "./parent-death-signal.js";
import { waitForStopStateSync } from "./proc-state.js";
import { loopbackHost, type ProcessHost } from "./process-host.js";
import { trackChild } from "./process-registry.js";

/** Everything needed to (re)start one member as a local `etcd` process. */
export interface BinaryMemberSpec {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** File receiving the member's stdout and stderr (appended to across restarts). */
  readonly logFile: string;
  /** `--initial-cluster` value: `name=peerUrl,…` for every member. */
  readonly initialCluster: string;
  readonly initialClusterToken: string;
  /** Where the process runs (e.g. a virtual network's host); default this machine's loopback. */
  readonly host?: ProcessHost | undefined;
  /** More etcd flags, appended last. */
  readonly extraArgs?: readonly string[];
}

const STOP_GRACE_MS = 3_000;

/** An etcd member running as a child process of the test process. */
export class BinaryEtcdMember implements EtcdMember {
  readonly #spec: BinaryMemberSpec;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #spawnError: Error | undefined;
  #paused = false;
  #retired = false;

  private constructor(spec: BinaryMemberSpec) {
    this.#spec = spec;
  }

  /** Spawns the member's process; does not wait for it to become healthy. */
  static spawn(spec: BinaryMemberSpec): BinaryEtcdMember {
    const member = new BinaryEtcdMember(spec);
    member.#spawnProcess();
    return member;
  }

  get name(): string {
    return this.#spec.name;
  }

  get clientUrl(): string {
    return this.#spec.clientUrl;
  }

  get peerUrl(): string {
    return this.#spec.peerUrl;
  }

  /** Path of the member's log file. */
  get logFile(): string {
    return this.#spec.logFile;
  }

  get pid(): number | undefined {
    return this.running ? this.#child?.pid : undefined;
  }

  get running(): boolean {
    const child = this.#child;
    return (
      child !== undefined &&
      child.pid !== undefined &&
      this.#spawnError === undefined &&
      child.exitCode === null &&
      child.signalCode === null
    );
  }

  get paused(): boolean {
    return this.#paused && this.running;
  }

  async kill(): Promise<void> {
    if (!this.running) return;
    this.#signal("SIGKILL");
    await this.#exited;
    this.#paused = false;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    // A stopped process leaves SIGTERM pending until it is continued.
    this.resume();
    this.#signal("SIGTERM");
    const exitedInTime = await Promise.race([
      this.#exited.then(() => true),
      sleep(STOP_GRACE_MS, false, { ref: false }),
    ]);
    if (!exitedInTime) this.#signal("SIGKILL");
    await this.#exited;
  }

  pause(): void {
    if (!this.running) throw new EtcdMemberStateError(this.name, "cannot pause: not running");
    if (this.#paused) return;
    this.#signal("SIGSTOP");
    this.#paused = true;
    const pid = this.pid;
    if (pid !== undefined) waitForStopStateSync(pid, true);
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const pid = this.pid;
    if (pid === undefined) return;
    this.#signal("SIGCONT");
    waitForStopStateSync(pid, false);
  }

  async restart(options?: WaitHealthyOptions): Promise<void> {
    // After the cluster's stop() the data dir is gone: etcd would silently found a
    // new one-member cluster in an untracked directory.
    if (this.#retired) throw new EtcdMemberStateError(this.name, "cannot restart: its cluster was stopped");
    await this.stop();
    this.#spawnProcess();
    await this.waitHealthy(options);
  }

  /**
   * Stop for good, as part of the cluster's teardown; `restart()` is refused
   * afterwards. Not `graceful` means SIGKILL right away.
   */
  async retire(graceful: boolean): Promise<void> {
    this.#retired = true;
    await (graceful ? this.stop() : this.kill());
  }

  async waitHealthy(options: WaitHealthyOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
    await pollUntilHealthy(
      {
        clientUrl: this.clientUrl,
        checkAlive: () => this.#deathError(),
        onTimeout: async (lastProbe) =>
          new EtcdHealthTimeoutError(this.name, timeoutMs, lastProbe, await readLogTail(this.logFile)),
      },
      timeoutMs,
      options.signal,
    );
  }

  /** Undefined while the process lives; otherwise why it is gone, with its log tail. */
  async #deathError(): Promise<Error | undefined> {
    if (this.running) return undefined;
    const logTail = await readLogTail(this.logFile);
    if (this.#spawnError !== undefined) {
      return new EtcdStartError(this.name, `could not be spawned: ${this.#spawnError.message}`, logTail, {
        cause: this.#spawnError,
      });
    }
    const child = this.#child;
    const how = child?.signalCode ? `signal ${child.signalCode}` : `code ${String(child?.exitCode)}`;
    const ErrorType = /address already in use/i.test(logTail) ? EtcdPortInUseError : EtcdStartError;
    return new ErrorType(this.name, `exited (${how}) before becoming healthy`, logTail);
  }

  #spawnProcess(): void {
    const spec = this.#spec;
    const onHost = (spec.host ?? loopbackHost).command("etcd", [
      "--name",
      spec.name,
      "--data-dir",
      spec.dataDir,
      "--listen-client-urls",
      spec.clientUrl,
      "--advertise-client-urls",
      spec.clientUrl,
      "--listen-peer-urls",
      spec.peerUrl,
      "--initial-advertise-peer-urls",
      spec.peerUrl,
      "--initial-cluster",
      spec.initialCluster,
      // Only read when the data dir is empty; a restart finds its membership in the WAL.
      "--initial-cluster-state",
      "new",
      "--initial-cluster-token",
      spec.initialClusterToken,
      // Fast failure detection and elections, so drills finish in seconds.
      "--heartbeat-interval",
      "50",
      "--election-timeout",
      "500",
      // A member cut off from the others keeps campaigning; without pre-vote its higher term
      // deposes the healthy leader when it comes back and the cluster stops for an election
      // (the net-etcd-leader-cut drill saw every replica's lease fence run out then).
      "--pre-vote",
      ...(spec.extraArgs ?? []),
    ]);
    const { command, args } = withParentDeathSignal(onHost.command, onHost.args);
    // The child writes straight into the file, so a member's chatter never reaches
    // the test output and nothing in this process has to drain pipes.
    const logFd = openSync(spec.logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn(command, args, { stdio: ["ignore", logFd, logFd], detached: false });
    } finally {
      closeSync(logFd);
    }
    this.#child = child;
    this.#spawnError = undefined;
    this.#paused = false;
    this.#exited = new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", (error) => {
        // Spawn failures (e.g. ENOENT) emit "error" and possibly no "exit".
        if (child.pid === undefined) {
          this.#spawnError = error;
          resolve();
        }
      });
    });
    if (child.pid !== undefined) trackChild(child);
  }

  #signal(signal: NodeJS.Signals): void {
    try {
      this.#child?.kill(signal);
    } catch {
      // Raced with the process exiting on its own.
    }
  }
}
