import type { AssignmentRecord } from "@org/coordinator";
import { runNetCommand } from "../harness/net-command.js";
import type { NetHost } from "../harness/virtual-network.js";
import type { JobEvent, JobProcess } from "../support/job-process.js";
import type { RmProcess } from "../support/rm-cluster.js";
import type { DrillEnvironment } from "./environment.js";

/** Shared steps of drill scenarios (waiting for leaders, expulsions, fences, versions). */

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until a replica other than `old` leads; returns ms since `t0`. */
export async function timeNewLeader(env: DrillEnvironment, old: RmProcess, t0: number): Promise<number> {
  await env.rm.waitForLeader({ not: old, timeoutMs: 30_000 });
  return Date.now() - t0;
}

/** Waits for the delete of a member key after `t0`; returns ms, or undefined. */
export async function waitForExpulsion(
  env: DrillEnvironment,
  node: string,
  t0: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const key = `${env.namespace}/groups/${env.group}/members/${node}`;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const e = env.etcdEvents.find((x) => x.type === "delete" && x.key === key && x.at >= t0);
    if (e !== undefined) return e.at - t0;
    await sleep(20);
  }
  return undefined;
}

/** Waits for a worker's `fenced` line among its events from index `from`; undefined on timeout. */
export async function waitForFence(
  worker: JobProcess,
  from: number,
  timeoutMs: number,
): Promise<JobEvent | undefined> {
  return worker.waitFor((e) => e.event === "fenced", timeoutMs, from).catch(() => undefined);
}

/** Every assignment record the recorder saw written, with the time it saw it. */
export function assignmentWrites(env: DrillEnvironment): { at: number; record: AssignmentRecord }[] {
  return env.etcdEvents
    .filter((e) => e.type === "put" && e.key === `${env.namespace}/groups/${env.group}/assignment`)
    .map((e) => ({ at: e.at, record: JSON.parse(e.value) as AssignmentRecord }));
}

/**
 * Whether the replica leadership moved since `before` led and each replica's log was at
 * `from`: how many times a replica logged `leadership_lost`, and whether another one leads
 * now. Under "one etcd member lost: nothing visible" the workers must not notice (same
 * version, no handler restart); a replica failover behind their backs is reported, not failed.
 */
export async function replicaLeadership(
  env: DrillEnvironment,
  before: RmProcess,
  from: readonly number[],
): Promise<{ leadershipLost: number; rmLeaderChanged: number }> {
  const lost = env.rm.replicas.flatMap((r, i) =>
    r.logs.slice(from[i] ?? 0).filter((l) => l.event === "leadership_lost"),
  );
  const after = await env.rm.waitForLeader();
  return { leadershipLost: lost.length, rmLeaderChanged: after === before ? 0 : 1 };
}

/**
 * How many TCP connections `host` holds in state ESTABLISHED with any of `peers` (read
 * with `ss` inside the host's namespace): after a cut they stay, half-open.
 */
export async function establishedConnections(host: NetHost, peers: readonly NetHost[]): Promise<number> {
  const out = await runNetCommand("ip", [
    "netns",
    "exec",
    host.namespace,
    "ss",
    "-Htn",
    "state",
    "established",
  ]);
  const addresses = new Set(peers.map((p) => p.address));
  return out
    .split("\n")
    .map((line) => line.trim().split(/\s+/).at(-1)?.replace(/:\d+$/, ""))
    .filter((peer) => peer !== undefined && addresses.has(peer)).length;
}
