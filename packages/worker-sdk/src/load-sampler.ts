import { monitorEventLoopDelay } from "node:perf_hooks";

/** What each heartbeat reports about the process. */
export interface ProcessLoad {
  /** CPU used since the previous sample, in percent of one core. */
  readonly cpuPercent: number;
  readonly memoryRssBytes: bigint;
  /** Event-loop delay p99 since the previous sample, in ms. */
  readonly eventLoopDelayMs: number;
}

/** Samples the process's CPU, memory and event-loop delay between heartbeats. */
export class LoadSampler {
  readonly #eld = monitorEventLoopDelay({ resolution: 20 });
  #cpu = process.cpuUsage();
  #cpuAt = performance.now();

  start(): void {
    this.#eld.enable();
  }

  close(): void {
    this.#eld.disable();
  }

  /** Figures since the previous call. */
  sample(now: number): ProcessLoad {
    const cpu = process.cpuUsage(this.#cpu);
    const elapsedMs = Math.max(1, now - this.#cpuAt);
    this.#cpu = process.cpuUsage();
    this.#cpuAt = now;
    const load: ProcessLoad = {
      cpuPercent: ((cpu.user + cpu.system) / 1000 / elapsedMs) * 100,
      memoryRssBytes: BigInt(process.memoryUsage.rss()),
      eventLoopDelayMs: this.#eld.percentile(99) / 1e6,
    };
    this.#eld.reset();
    return load;
  }
}
