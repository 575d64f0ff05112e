import { execFile, spawnSync } from "node:child_process";
import { NetworkCommandError } from "./errors.js";

/** Longest an `ip`/`iptables` call may take; they finish in milliseconds unless something is wrong. */
const COMMAND_TIMEOUT_MS = 10_000;

/**
 * Runs one `ip` or `iptables` command (with `input` on its stdin, e.g. for `ip -batch -`)
 * and resolves with its stdout; rejects with a {@link NetworkCommandError} carrying the
 * command line, exit code and stderr.
 */
export function runNetCommand(command: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { timeout: COMMAND_TIMEOUT_MS, encoding: "utf8" },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve(stdout);
          return;
        }
        const code = typeof error.code === "number" ? error.code : null;
        const why = error.code === "ENOENT" ? `${command} not found (install iproute2 and iptables)` : stderr;
        const line =
          [command, ...args].join(" ") + (input === undefined ? "" : ` <<< ${JSON.stringify(input)}`);
        reject(new NetworkCommandError(line, code, why, { cause: error }));
      },
    );
    // A command that exits without reading its stdin must not crash us with EPIPE: its
    // exit status is what counts.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
  });
}

/** {@link runNetCommand} for exit handlers, which cannot wait for a promise; never throws. */
export function runNetCommandSync(command: string, args: readonly string[]): boolean {
  const r = spawnSync(command, args, { timeout: COMMAND_TIMEOUT_MS, stdio: "ignore" });
  return r.status === 0;
}
