import { readFileSync } from "node:fs";

const SETTLE_TIMEOUT_MS = 500;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Blocks until the process with `pid` is (`stopped = true`) or is no longer
 * (`false`) in job-control stop, as reported by /proc/<pid>/stat.
 *
 * Signals are delivered asynchronously: right after `kill(pid, "SIGSTOP")` returns,
 * the target may still be on a CPU answering one more request. Waiting here lets
 * `pause()` promise "frozen on return" to the drill that calls it. Gives up
 * quietly after 500 ms or when /proc is unavailable (non-Linux), since the signal
 * has been sent either way.
 */
export function waitForStopStateSync(pid: number, stopped: boolean): void {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const state = readProcessState(pid);
    if (state === undefined || isStopped(state) === stopped || Date.now() >= deadline) return;
    Atomics.wait(sleeper, 0, 0, 1);
  }
}

/** The one-letter state of proc(5) (`R`, `S`, `T`, …), or undefined if unknown. */
export function readProcessState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name in parentheses may contain spaces; the state follows its ")".
    return stat.charAt(stat.lastIndexOf(")") + 2) || undefined;
  } catch {
    return undefined;
  }
}

function isStopped(state: string): boolean {
  // `T` is stopped by a signal, `t` stopped by a tracer: neither runs.
  return state === "T" || state === "t";
}
