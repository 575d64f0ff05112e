import { spawnSync } from "node:child_process";

/** A program and its arguments, ready for `spawn`. */
export interface Command {
  readonly command: string;
  readonly args: readonly string[];
}

let setprivSupportsPdeathsig: boolean | undefined;

/**
 * Wraps `command` so the kernel SIGKILLs it when the spawning thread dies, even if
 * that death runs no JavaScript (SIGKILL, OOM, native crash).
 *
 * Uses util-linux `setpriv --pdeathsig KILL`, which sets PR_SET_PDEATHSIG and then
 * execs the command, so the child keeps a single pid and receives our signals
 * directly. Where `setpriv` is missing (non-Linux, minimal images) the command is
 * returned unchanged and only the in-process exit handlers protect against leaks.
 */
export function withParentDeathSignal(command: string, args: readonly string[]): Command {
  if (!hasSetprivPdeathsig()) return { command, args };
  return { command: "setpriv", args: ["--pdeathsig", "KILL", "--", command, ...args] };
}

function hasSetprivPdeathsig(): boolean {
  if (setprivSupportsPdeathsig === undefined) {
    if (process.platform !== "linux") {
      setprivSupportsPdeathsig = false;
    } else {
      const probe = spawnSync("setpriv", ["--help"], { encoding: "utf8", timeout: 5_000 });
      setprivSupportsPdeathsig = probe.status === 0 && probe.stdout.includes("--pdeathsig");
    }
  }
  return setprivSupportsPdeathsig;
}
