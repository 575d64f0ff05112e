import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux we run on (USER_HZ). */
const CLK_TCK = 100;

/** utime + stime of a process, in seconds of CPU. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after "state" (field 3).
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Resident set size in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return m?.[1] === undefined ? Number.NaN : Number(m[1]) * 1024;
}

export interface ProcWindow {
  /** Average CPU over the window, in percent of one core. */
  readonly cpuPercent: number;
  readonly rssMaxBytes: number;
  readonly rssLastBytes: number;
}

/**
 * Samples one process over a window: CPU from the utime+stime delta (exact, not sampled),
 * RSS every `everyMs` (its maximum and last value).
 */
export class ProcSampler {
  readonly #pid: number;
  readonly #t0: number;
  readonly #cpu0: number;
  #rssMax = 0;
  #rssLast = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(pid: number, everyMs = 500) {
    this.#pid = pid;
    this.#t0 = performance.now();
    this.#cpu0 = cpuSeconds(pid);
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), everyMs);
  }

  #sample(): void {
    try {
      const rss = rssBytes(this.#pid);
      this.#rssLast = rss;
      if (rss > this.#rssMax) this.#rssMax = rss;
    } catch {
      // the process is gone; keep what we have
    }
  }

  stop(): ProcWindow {
    clearInterval(this.#timer);
    this.#sample();
    const elapsed = (performance.now() - this.#t0) / 1000;
    let cpu = Number.NaN;
    try {
      cpu = ((cpuSeconds(this.#pid) - this.#cpu0) / elapsed) * 100;
    } catch {
      // gone
    }
    return { cpuPercent: cpu, rssMaxBytes: this.#rssMax, rssLastBytes: this.#rssLast };
  }
}

export const MiB = 2 ** 20;
