import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { getFreePorts } from "../harness/free-port.js";
import { withParentDeathSignal } from "../harness/parent-death-signal.js";
import { loopbackHost, type ProcessHost } from "../harness/process-host.js";
import { trackChild } from "../harness/process-registry.js";
import { ArrivalWaiter } from "./arrival-waiter.js";

/**
 * GETs JSON with a 2 s timeout. Over https the replica's certificate is not verified: this
 * reads status for the harness; the TLS tests check certificates themselves.
 */
export function getJson(url: string, headers: Record<string, string> = {}): Promise<unknown> {
  const get = url.startsWith("https:") ? httpsGet : httpGet;
  return new Promise((resolve, reject) => {
    const req = get(url, { headers, rejectUnauthorized: false, timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`GET ${url}: ${res.statusCode} ${body}`));
        try {
          resolve(JSON.parse(body));
        } catch (e) {
          reject(e);
        }
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on("error", reject);
  });
}

/** The coordinator's CLI entry (built by `pnpm build`). */
export const coordinatorBin = fileURLToPath(
  new URL("../../../packages/coordinator/bin/coordinator.js", import.meta.url),
);

/** One parsed JSON log line of a replica, with the time we received it. */
export interface LogLine {
  readonly at: number;
  readonly event?: string;
  readonly [key: string]: unknown;
}

export interface RmProcessOptions {
  readonly id: string;
  readonly etcd: readonly string[];
  readonly namespace: string;
  readonly port: number;
  readonly httpPort: number;
  /** Extra CLI flags, e.g. ["--leader-ttl", "2"]. */
  readonly args?: readonly string[];
  /** Where the replica runs, listens and advertises (e.g. a virtual network's host); default loopback. */
  readonly host?: ProcessHost;
}

/**
 * A real coordinator replica process: started with the CLI, its JSON logs collected, and
 * killable for real (SIGKILL), stoppable (SIGTERM), pausable (SIGSTOP/SIGCONT).
 */
export class RmProcess {
  readonly options: RmProcessOptions;
  readonly logs: LogLine[] = [];
  /** The same lines as written (to check what JSON.parse hides, e.g. a key written twice). */
  readonly rawLogs: string[] = [];
  readonly stderr: string[] = [];
  #child: ChildProcess | undefined;
  #exit: Promise<number | null> = Promise.resolve(null);
  #paused = false;
  readonly #waiter = new ArrivalWaiter<LogLine>(this.logs);

  constructor(options: RmProcessOptions) {
    this.options = options;
  }

  get id(): string {
    return this.options.id;
  }

  /** The host it runs on. */
  get host(): ProcessHost {
    return this.options.host ?? loopbackHost;
  }

  get address(): string {
    return `${this.host.address}:${this.options.port}`;
  }

  /** `https://` when the replica serves TLS (`--tls-cert`): its HTTP listener uses the same certificate. */
  get httpUrl(): string {
    const scheme = (this.options.args ?? []).includes("--tls-cert") ? "https" : "http";
    return `${scheme}://${this.host.address}:${this.options.httpPort}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /** Resolves with the exit code (null when killed by a signal). */
  get exited(): Promise<number | null> {
    return this.#exit;
  }

  start(): void {
    const o = this.options;
    const args = [
      // RM_CPU_PROF=<dir>: each replica writes a V8 CPU profile there when it exits cleanly
      // (SIGTERM; docs/benchmarks.md, "Profiling a replica").
      ...(process.env.RM_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.RM_CPU_PROF}`] : []),
      // RM_NODE_FLAGS="--flag ...": Node/V8 flags for each replica (benchmark experiments).
      ...(process.env.RM_NODE_FLAGS ?? "").split(" ").filter((f) => f !== ""),
      coordinatorBin,
      "serve",
      "--etcd",
      o.etcd.join(","),
      "--listen",
      this.address,
      "--http-listen",
      `${this.host.address}:${o.httpPort}`,
      "--id",
      o.id,
      "--namespace",
      o.namespace,
      // A replica on a host of its own (a virtual network) listens beyond loopback: plaintext
      // there needs the explicit flag (DESIGN.md, Security).
      ...(this.host !== loopbackHost && !(o.args ?? []).includes("--tls-cert") ? ["--insecure"] : []),
      ...(o.args ?? []),
    ];
    const onHost = this.host.command(process.execPath, args);
    const cmd = withParentDeathSignal(onHost.command, onHost.args);
    const child = spawn(cmd.command, [...cmd.args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LOG_LEVEL: "info" },
    });
    trackChild(child);
    this.#child = child;
    this.#paused = false;
    this.#exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      try {
        this.logs.push({ at: performance.now(), ...(JSON.parse(line) as Record<string, unknown>) });
        this.rawLogs.push(line);
      } catch {
        this.stderr.push(line);
      }
      this.#waiter.arrived();
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) =>
      this.stderr.push(line),
    );
  }

  /** Waits for a log line matching `pred` (searching lines from `fromIndex`). */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 15_000, fromIndex = 0): Promise<LogLine> {
    return this.#waiter.waitFor(
      pred,
      timeoutMs,
      fromIndex,
      () => `${this.id}: last lines:\n${this.tail(10)}`,
    );
  }

  tail(n: number): string {
    return [...this.logs.slice(-n).map((l) => JSON.stringify(l)), ...this.stderr.slice(-n)].join("\n");
  }

  /** GET /status from the replica. */
  async status(): Promise<{
    role: string;
    leaderEpoch: number;
    etcdWrites: number;
    leader: { id: string; address: string } | null;
  }> {
    return (await getJson(`${this.httpUrl}/status`)) as {
      role: string;
      leaderEpoch: number;
      etcdWrites: number;
      leader: { id: string; address: string } | null;
    };
  }

  signal(sig: NodeJS.Signals): void {
    if (this.#child?.pid !== undefined && this.running) process.kill(this.#child.pid, sig);
  }

  async kill(): Promise<void> {
    if (!this.running) return;
    if (this.#paused) this.resume();
    this.signal("SIGKILL");
    await this.#exit;
  }

  /** SIGTERM and wait for the exit code. */
  async stop(): Promise<number | null> {
    if (!this.running) return this.#exit;
    if (this.#paused) this.resume();
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), 10_000);
    try {
      return await this.#exit;
    } finally {
      clearTimeout(timer);
    }
  }

  pause(): void {
    this.signal("SIGSTOP");
    this.#paused = true;
  }

  resume(): void {
    this.signal("SIGCONT");
    this.#paused = false;
  }
}

export interface RmClusterOptions {
  readonly etcd: readonly string[];
  readonly count?: number;
  readonly namespace?: string;
  readonly args?: readonly string[];
  /** Per-replica extra flags, after `args` (a later flag wins), e.g. a different session timeout. */
  readonly argsFor?: (index: number) => readonly string[];
  /** Per-replica etcd endpoints (e.g. one replica behind a fault proxy); default `etcd`. */
  readonly etcdFor?: (index: number) => readonly string[];
  /**
   * Per-replica host (e.g. hosts of a virtual network); default loopback on free ports.
   * A replica on a host of its own listens on ports 50051 (gRPC) and 8080 (HTTP) there.
   */
  readonly hostFor?: (index: number) => ProcessHost;
}

/** Ports of a replica that runs on a host of its own. */
const HOST_GRPC_PORT = 50051;
const HOST_HTTP_PORT = 8080;

/** N replicas against one etcd, on free loopback ports, each in its own process. */
export class RmCluster implements AsyncDisposable {
  readonly replicas: RmProcess[];
  readonly namespace: string;

  private constructor(replicas: RmProcess[], namespace: string) {
    this.replicas = replicas;
    this.namespace = namespace;
  }

  static async start(o: RmClusterOptions): Promise<RmCluster> {
    const count = o.count ?? 3;
    const namespace = o.namespace ?? `/test-${randomBytes(4).toString("hex")}`;
    const ports = o.hostFor === undefined ? await getFreePorts(count * 2) : [];
    const replicas = Array.from({ length: count }, (_, i) => {
      return new RmProcess({
        id: `rm-${i + 1}`,
        etcd: o.etcdFor?.(i) ?? o.etcd,
        namespace,
        port: ports[2 * i] ?? HOST_GRPC_PORT,
        httpPort: ports[2 * i + 1] ?? HOST_HTTP_PORT,
        args: [...(o.args ?? []), ...(o.argsFor?.(i) ?? [])],
        host: o.hostFor?.(i),
      });
    });
    for (const r of replicas) r.start();
    const cluster = new RmCluster(replicas, namespace);
    try {
      // Generous: on a loaded 2-core machine starting three node processes takes seconds.
      await cluster.waitForLeader({ timeoutMs: 60_000 });
    } catch (e) {
      await cluster.stop();
      const tails = replicas.map((r) => `--- ${r.id} (${r.address}):\n${r.tail(5)}`).join("\n");
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n${tails}`, { cause: e });
    }
    return cluster;
  }

  get addresses(): string[] {
    return this.replicas.map((r) => r.address);
  }

  /** Polls /status of the running replicas until exactly one says it leads; returns it. */
  async waitForLeader(options: { timeoutMs?: number; not?: RmProcess } = {}): Promise<RmProcess> {
    const deadline = performance.now() + (options.timeoutMs ?? 20_000);
    let last = "";
    while (performance.now() < deadline) {
      const leaders: RmProcess[] = [];
      for (const r of this.replicas) {
        if (!r.running || r === options.not) continue;
        try {
          if ((await r.status()).role === "leader") leaders.push(r);
        } catch (e) {
          last = String(e);
        }
      }
      if (leaders.length === 1 && leaders[0] !== undefined) return leaders[0];
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no single leader within the timeout (${last})`);
  }

  async stop(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.kill()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
