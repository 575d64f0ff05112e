import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
// Built JS of the integration harness (not in its package exports): the same process
// tracking the tests use, so every child dies with us (exit handlers + PR_SET_PDEATHSIG).
import { withParentDeathSignal } from "../../integration/dist/harness/parent-death-signal.js";
import { trackChild } from "../../integration/dist/harness/process-registry.js";

/** A JSON object a child printed on one stdout line, with our receive time. */
export interface ChildMessage {
  readonly t: string;
  readonly [key: string]: unknown;
}

/** Path of a sibling script in bench/dist. */
export function benchScript(name: string): string {
  return fileURLToPath(new URL(`./${name}`, import.meta.url));
}

/**
 * A Node child process speaking JSON lines on stdout (one object per line, with a `t` type
 * field). Lines that are not JSON go to the stderr tail, for error messages.
 */
export class NodeChild {
  readonly messages: ChildMessage[] = [];
  readonly #stderr: string[] = [];
  readonly #child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly #waiters = new Set<() => void>();
  readonly #listeners = new Set<(m: ChildMessage) => void>();

  constructor(script: string, args: readonly string[], nodeFlags: readonly string[] = []) {
    const cmd = withParentDeathSignal(process.execPath, [...nodeFlags, benchScript(script), ...args]);
    this.#child = spawn(cmd.command, [...cmd.args], { stdio: ["ignore", "pipe", "pipe"] });
    trackChild(this.#child);
    const child = this.#child;
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      let msg: ChildMessage;
      try {
        msg = JSON.parse(line) as ChildMessage;
      } catch {
        this.#pushErr(line);
        return;
      }
      this.messages.push(msg);
      for (const l of this.#listeners) l(msg);
      for (const w of this.#waiters) w();
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (l) => this.#pushErr(l));
    child.once("exit", () => {
      for (const w of this.#waiters) w();
    });
  }

  #pushErr(line: string): void {
    // Bounded: an error message quotes these lines.
    this.#stderr.push(line.length > 500 ? `${line.slice(0, 500)}... (${line.length} characters)` : line);
    if (this.#stderr.length > 50) this.#stderr.shift();
  }

  get pid(): number {
    const pid = this.#child.pid;
    if (pid === undefined) throw new Error("child has no pid (spawn failed)");
    return pid;
  }

  get running(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null;
  }

  onMessage(listener: (m: ChildMessage) => void): void {
    this.#listeners.add(listener);
  }

  /** Resolves with the first message of type `t` (searching everything received so far). */
  waitFor(t: string, timeoutMs: number): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.messages.find((x) => x.t === t);
        if (m !== undefined) {
          done();
          resolve(m);
        } else if (!this.running) {
          done();
          reject(new Error(`child exited before "${t}":\n${this.#stderr.slice(-15).join("\n")}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`no "${t}" from child within ${timeoutMs} ms:\n${this.#stderr.slice(-15).join("\n")}`),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.#child.kill(sig);
  }

  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.exited;
  }
}
