import { type ChildMessage, NodeChild } from "./children.js";

/** One raw worker's view, as its `follow` load generator reported it. */
export interface WorkerEvent {
  readonly t: "welcome" | "assignment" | "end";
  readonly node: string;
  /** Wall-clock ms (performance.timeOrigin + performance.now()) in the worker's process. */
  readonly at: number;
  readonly version?: number;
  readonly phase?: "active" | "pending" | "none";
  readonly total?: number;
  readonly shards?: number[];
  readonly resumed?: boolean;
}

export interface WorkerState {
  readonly events: WorkerEvent[];
  version: number;
  phase: string;
  total: number;
  shards: number[];
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Follow-mode load generators (raw workers that follow the leader) and what they report. */
export class WorkerFleet {
  readonly workers = new Map<string, WorkerState>();
  readonly #gens: NodeChild[] = [];
  #lastEventAt = performance.now();

  /** Starts `n` workers named `<prefix>-NNNNNN` in processes of at most `perProcess`. */
  spawn(targets: readonly string[], group: string, prefix: string, n: number, perProcess = 500): NodeChild[] {
    const out: NodeChild[] = [];
    for (let i = 0; i < n; i += perProcess) {
      const gen = new NodeChild("loadgen.js", [
        "follow",
        "--targets",
        targets.join(","),
        "--group",
        group,
        "--node-prefix",
        `${prefix}${i / perProcess}`,
        "--streams",
        String(Math.min(perProcess, n - i)),
      ]);
      gen.onMessage((m) => this.#on(m));
      this.#gens.push(gen);
      out.push(gen);
    }
    return out;
  }

  #on(m: ChildMessage): void {
    const e = m as unknown as WorkerEvent;
    if (typeof e.node !== "string") return;
    this.#lastEventAt = performance.now();
    let w = this.workers.get(e.node);
    if (w === undefined) {
      w = { events: [], version: 0, phase: "none", total: 0, shards: [] };
      this.workers.set(e.node, w);
    }
    w.events.push(e);
    if ((e.t === "welcome" || e.t === "assignment") && e.version !== undefined) {
      w.version = e.version;
      w.phase = e.phase ?? "none";
      w.total = e.total ?? 0;
      w.shards = e.shards ?? [];
    }
  }

  /** Waits until `pred` holds for the worker set (polled), or throws after `timeoutMs`. */
  async until(what: string, pred: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!pred()) {
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await settle(50);
    }
  }

  /**
   * Waits until `n` workers are welcomed, all on one active version, and nothing happened
   * for `quietMs` (the debounce and the handoff are over). Returns that version.
   */
  async stable(n: number, quietMs: number, timeoutMs: number): Promise<number> {
    let version = 0;
    await this.until(
      `${n} workers on one active version`,
      () => {
        if (this.workers.size < n || performance.now() - this.#lastEventAt < quietMs) return false;
        const vs = new Set([...this.workers.values()].map((w) => `${w.version}/${w.phase}`));
        const [only] = vs;
        if (vs.size !== 1 || only === undefined || !only.endsWith("/active")) return false;
        version = Number(only.split("/")[0]);
        return true;
      },
      timeoutMs,
    );
    return version;
  }

  async stop(): Promise<void> {
    await Promise.all(this.#gens.map((g) => g.kill()));
  }
}
