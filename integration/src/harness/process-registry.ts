/**
 * Last-resort cleanup of everything the harness starts, for when a test forgets
 * `stop()` or the test process dies.
 *
 * Three layers, each covering what the previous one cannot:
 *
 * 1. `process.on("exit")` plus SIGINT/SIGTERM/SIGHUP handlers: synchronously
 *    SIGCONT + SIGKILL every tracked child and `rmSync` every tracked temp dir.
 *    Covers normal exit, `process.exit()` and polite termination.
 * 2. Children are spawned through `setpriv --pdeathsig KILL` when available (see
 *    `parent-death-signal.ts`): the kernel SIGKILLs etcd when the spawning thread dies,
 *    which covers a vitest worker that is itself SIGKILLed or crashes natively and
 *    so runs no JavaScript at all. (A wrapper process or `detached` groups would
 *    not help there: nothing would be left to forward the kill.)
 * 3. Temp dirs carry the owning pid in their name; the next harness run removes
 *    dirs whose owner is gone ({@link sweepOrphanedTempDirs}), since layer 2 kills
 *    processes but cannot delete files.
 *
 * Other resources (network namespaces) register their own synchronous exit cleanup with
 * {@link onExitSync} and sweep their orphans the same way (see `netns-registry.ts`).
 */
import type { ChildProcess } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Prefix of every temp dir the harness creates: `shard-etcd-<ownerPid>-…`. */
export const TEMP_DIR_PREFIX = "shard-etcd-";

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const exitCleanups = new Set<() => void>();
let handlersInstalled = false;
let orphansSwept = false;

/** Starts tracking `child` until it exits; it is SIGKILLed if this process exits first. */
export function trackChild(child: ChildProcess): void {
  installHandlers();
  children.add(child);
  child.once("exit", () => children.delete(child));
}

/** Tracks a temp dir so it is removed if this process exits before the owner cleans it up. */
export function trackTempDir(path: string): void {
  installHandlers();
  tempDirs.add(path);
}

/** Stops tracking a temp dir (call after removing it). */
export function untrackTempDir(path: string): void {
  tempDirs.delete(path);
}

/**
 * Runs `cleanup` synchronously if this process exits (or is terminated politely) before
 * the returned function unregisters it; it runs after every tracked child was killed.
 * For resources that are neither a process nor a temp dir, e.g. network namespaces.
 */
export function onExitSync(cleanup: () => void): () => void {
  installHandlers();
  exitCleanups.add(cleanup);
  return () => exitCleanups.delete(cleanup);
}

/** Name prefix for a new temp dir owned by this process. */
export function tempDirPrefix(label: string): string {
  return join(tmpdir(), `${TEMP_DIR_PREFIX}${process.pid}-${label}-`);
}

/**
 * Removes harness temp dirs whose owning process no longer exists (left behind by a
 * test process that was SIGKILLed). Runs at most once per process.
 */
export function sweepOrphanedTempDirs(): void {
  if (orphansSwept) return;
  orphansSwept = true;
  let entries: string[];
  try {
    entries = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.startsWith(TEMP_DIR_PREFIX)) continue;
    const ownerPid = Number.parseInt(entry.slice(TEMP_DIR_PREFIX.length), 10);
    if (!Number.isInteger(ownerPid) || ownerPid === process.pid || isProcessAlive(ownerPid)) continue;
    rmSync(join(tmpdir(), entry), { recursive: true, force: true, maxRetries: 3 });
  }
}

/** True when a process with this pid exists (it may belong to another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function killEverythingSync(): void {
  for (const child of children) {
    const pid = child.pid;
    if (pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    // A stopped process only acts on SIGKILL, but SIGCONT first keeps the kill
    // prompt even if something in between (e.g. ptrace) holds it stopped.
    trySignal(pid, "SIGCONT");
    trySignal(pid, "SIGKILL");
  }
  children.clear();
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // Best effort at exit: the orphan sweep of the next run catches what is left.
    }
  }
  tempDirs.clear();
  for (const cleanup of exitCleanups) {
    try {
      cleanup();
    } catch {
      // Best effort at exit: each resource's own orphan sweep catches what is left.
    }
  }
  exitCleanups.clear();
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", killEverythingSync);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killEverythingSync();
      // Adding a listener disables Node's default "terminate on signal". When we are
      // the only listener, restore that default and re-raise so the process still dies.
      if (process.listenerCount(signal) === 1) {
        process.off(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}
