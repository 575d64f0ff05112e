/**
 * Leak-proof bookkeeping of the network namespaces the harness creates, following
 * `process-registry.ts`:
 *
 * 1. Every namespace is named `shn-<ownerPid>-…` ({@link NETNS_PREFIX}), so it can be told
 *    apart from anything else on the machine and traced to the process that made it.
 * 2. Tracked namespaces are deleted synchronously at exit and on SIGINT/SIGTERM/SIGHUP
 *    (after the tracked children were killed), through {@link onExitSync}.
 * 3. A process that died without running JavaScript (SIGKILL, OOM) leaves its namespaces
 *    behind: the next network created on this machine deletes every `shn-` namespace
 *    whose owner is gone ({@link sweepOrphanedNamespaces}).
 *
 * Deleting a namespace removes everything in it: its interfaces (and with a veth its
 * peer, wherever that lives) and its iptables rules. So the bridge namespace's deletion
 * also removes the observer veth in the root namespace; nothing else is created outside.
 */

import { runNetCommand, runNetCommandSync } from "./net-command.js";
import { isProcessAlive, onExitSync } from "./process-registry.js";

/** Prefix of every namespace (and of the root-namespace veth) the harness creates. */
export const NETNS_PREFIX = "shn-";

const tracked = new Set<string>();
let unregisterExit: (() => void) | undefined;
let swept: Promise<unknown> | undefined;

/** Prefix of the namespaces of network number `index` of this process: `shn-<pid>-<index>`. */
export function networkPrefix(index: number): string {
  return `${NETNS_PREFIX}${process.pid}-${index}`;
}

/** Creates namespaces (one `ip -batch`) and tracks them until {@link deleteNamespace}. */
export async function addNamespaces(names: readonly string[]): Promise<void> {
  // Tracked before they exist, so a crash in between still deletes whatever got created.
  for (const name of names) track(name);
  await runNetCommand("ip", ["-batch", "-"], names.map((n) => `netns add ${n}\n`).join(""));
}

/** Deletes a namespace (and so everything in it); a missing one is not an error. */
export async function deleteNamespace(name: string): Promise<void> {
  const present = (await listNamespaces()).includes(name);
  if (present) await runNetCommand("ip", ["netns", "delete", name]);
  tracked.delete(name);
  if (tracked.size === 0) {
    unregisterExit?.();
    unregisterExit = undefined;
  }
}

/** Names of every namespace on the machine (`ip netns list`, first column). */
export async function listNamespaces(): Promise<string[]> {
  const out = await runNetCommand("ip", ["netns", "list"]);
  return out
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name !== "");
}

/**
 * Deletes every harness namespace whose owning process is gone. Runs once per process
 * (the first call's promise is shared); later networks rely on the exit handlers.
 */
export async function sweepOrphanedNamespaces(): Promise<void> {
  swept ??= removeOrphanedNamespaces();
  await swept;
}

/** The sweep itself, on every call: for a test that makes an orphan on purpose. */
export async function removeOrphanedNamespaces(): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listNamespaces()) {
    const owner = ownerOf(name);
    if (owner === undefined || owner === process.pid || isProcessAlive(owner)) continue;
    await runNetCommand("ip", ["netns", "delete", name]).catch(() => undefined);
    removed.push(name);
  }
  return removed;
}

/** The owning pid encoded in a harness namespace name, or undefined for any other name. */
export function ownerOf(name: string): number | undefined {
  if (!name.startsWith(NETNS_PREFIX)) return undefined;
  const pid = Number.parseInt(name.slice(NETNS_PREFIX.length), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function track(name: string): void {
  tracked.add(name);
  unregisterExit ??= onExitSync(() => {
    // Host namespaces first, bridge last: the order does not matter for correctness
    // (each delete stands alone), only for fewer dangling veths in between.
    for (const ns of [...tracked].reverse()) runNetCommandSync("ip", ["netns", "delete", ns]);
    tracked.clear();
  });
}
