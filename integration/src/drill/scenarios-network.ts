import { findEtcdLeader } from "../harness/etcd-leader.js";
import type { NetHost } from "../harness/virtual-network.js";
import type { LogLine } from "../support/rm-cluster.js";
import { type DrillEnvironment, drillTiming as t } from "./environment.js";
import {
  establishedConnections,
  replicaLeadership,
  sleep,
  timeNewLeader,
  waitForExpulsion,
  waitForFence,
} from "./scenario-helpers.js";
import type { Scenario, ScenarioResult } from "./scenarios.js";

/**
 * Real network partitions: every etcd member, replica and worker on a host of its own in
 * a virtual network (`network: "netns"`), links cut with iptables DROP (packets vanish,
 * TCP connections stay half-open) and healed. See harness/virtual-network.ts.
 */

const netns = { network: "netns" } as const;

/**
 * The self-fence promise: a worker cut off from the leader stops before the leader expels
 * it. `fencedAt` is the worker's clock, `expelledMs` when the recorder saw the member key's
 * delete (both on this machine's clock; the recorder sees the delete after it happened, so
 * a fence later than that is certainly late).
 */
function fenceProblems(
  node: string,
  fencedAt: number | undefined,
  t0: number,
  expelledMs: number | undefined,
): string[] {
  if (fencedAt === undefined) return [`${node} did not fence itself`];
  if (expelledMs !== undefined && fencedAt > t0 + expelledMs)
    return [`${node} fenced itself ${fencedAt - (t0 + expelledMs)} ms after its expulsion`];
  return [];
}

/** The wall-clock time a replica wrote a log line (its `time` field), in ms. */
function logTime(line: LogLine | undefined): number | undefined {
  const time = line?.time;
  if (typeof time !== "string") return undefined;
  const ms = Date.parse(time);
  return Number.isNaN(ms) ? undefined : ms;
}

/** One etcd member (the raft leader, or a follower) cut off from every other host; nothing may show. */
async function etcdMemberCut(env: DrillEnvironment, which: "leader" | "follower"): Promise<ScenarioResult> {
  const net = env.requireNet();
  const rmLeader = await env.rm.waitForLeader();
  const from = env.rm.replicas.map((r) => r.logs.length);
  const etcdLeader = await findEtcdLeader(env.etcd.members);
  const index = env.etcd.members.findIndex((m) => (which === "leader" ? m === etcdLeader : m !== etcdLeader));
  const host = env.etcdHosts[index];
  if (host === undefined) throw new Error(`no etcd host for member ${index}`);
  const others = net.hosts.filter((h) => h !== host);
  await net.cut(host, others);
  await sleep(t.sessionTimeoutMs + 2000);
  await net.heal(host, others);
  return {
    workersAlive: true,
    expectSameVersion: true,
    problems: [],
    measured: { cutMember: host.name, ...(await replicaLeadership(env, rmLeader, from)) },
  };
}

export const networkScenarios: readonly Scenario[] = [
  {
    name: "net-worker-cut",
    description: "cut one worker off from every replica (half-open TCP); it fences, its shards move",
    options: netns,
    async run(env) {
      const net = env.requireNet();
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const host = victim.host as NetHost;
      const replicas = env.replicaHosts;
      const from = victim.events.length;
      const t0 = Date.now();
      await net.cut(host, replicas);
      const halfOpen = await establishedConnections(host, replicas);
      const detectionMs = await waitForExpulsion(env, victim.node, t0, t.sessionTimeoutMs * 3);
      const fence = await waitForFence(victim, from, t.sessionTimeoutMs);
      const problems: string[] = [];
      if (halfOpen === 0)
        problems.push("the worker had no ESTABLISHED connection to a replica after the cut");
      if (detectionMs === undefined) problems.push("never expelled");
      problems.push(...fenceProblems(victim.node, fence?.t, t0, detectionMs));
      // Let the others take its shards and work a while, then heal: it rejoins as a new member.
      await sleep(2000);
      await net.heal(host, replicas);
      return {
        detectionMs,
        workersAlive: false,
        expectSameVersion: false,
        problems,
        measured: { halfOpenConnections: halfOpen, fenceMs: fence === undefined ? null : fence.t - t0 },
      };
    },
  },
  {
    name: "net-leader-etcd-cut",
    description: "cut the leading replica off from every etcd member, not from its workers",
    options: netns,
    async run(env) {
      const net = env.requireNet();
      const leader = await env.rm.waitForLeader();
      const from = env.rm.replicas.map((r) => r.logs.length);
      const t0 = Date.now();
      await net.cut(leader.host as NetHost, env.etcdHosts);
      const failoverMs = await timeNewLeader(env, leader, t0);
      const next = await env.rm.waitForLeader({ not: leader });
      const problems: string[] = [];
      const lost = await leader
        .waitForLog((l) => l.event === "leadership_lost", 10_000, from[env.rm.replicas.indexOf(leader)])
        .catch(() => undefined);
      const elected = await next
        .waitForLog((l) => l.event === "elected", 10_000, from[env.rm.replicas.indexOf(next)])
        .catch(() => undefined);
      // The leader's self-fence: it must stop leading before its lease can have expired in
      // etcd, so before anyone else is elected (both times from the replicas' own log lines).
      const lostAt = logTime(lost);
      const electedAt = logTime(elected);
      if (lostAt === undefined) problems.push("the cut-off leader did not step down");
      else if (electedAt !== undefined && lostAt > electedAt)
        problems.push(
          `the cut-off leader stepped down ${lostAt - electedAt} ms after ${next.id} was elected`,
        );
      await sleep(1000);
      await net.heal(leader.host as NetHost, env.etcdHosts);
      return {
        failoverMs,
        workersAlive: true,
        expectSameVersion: true,
        problems,
        measured: {
          stepDownMs: lostAt === undefined ? null : lostAt - t0,
          newLeaderElectedMs: electedAt === undefined ? null : electedAt - t0,
        },
      };
    },
  },
  {
    name: "net-leader-workers-cut",
    description:
      "cut the leading replica off from every worker, not from etcd; workers fence, rejoin on heal",
    options: netns,
    async run(env) {
      const net = env.requireNet();
      const leader = await env.rm.waitForLeader();
      const workers = env.workers.filter((w) => w.running);
      const from = workers.map((w) => w.events.length);
      const t0 = Date.now();
      await net.cut(leader.host as NetHost, env.workerHosts);
      const expelled = await Promise.all(
        workers.map((w) => waitForExpulsion(env, w.node, t0, t.sessionTimeoutMs * 3)),
      );
      const fences = await Promise.all(
        workers.map((w, i) => waitForFence(w, from[i] ?? 0, t.sessionTimeoutMs)),
      );
      const problems: string[] = [];
      workers.forEach((w, i) => {
        if (expelled[i] === undefined) problems.push(`${w.node} was never expelled`);
        problems.push(...fenceProblems(w.node, fences[i]?.t, t0, expelled[i]));
      });
      const leaderNow = await env.rm.waitForLeader();
      await sleep(1000);
      await net.heal(leader.host as NetHost, env.workerHosts);
      const times = (xs: (number | undefined)[]) =>
        xs.every((x) => x !== undefined) ? Math.max(...xs) : null;
      return {
        detectionMs: times(expelled) ?? undefined,
        workersAlive: false,
        expectSameVersion: false,
        problems,
        measured: {
          maxFenceMs: times(fences.map((f) => (f === undefined ? undefined : f.t - t0))),
          leaderKept: leaderNow === leader ? 1 : 0,
        },
      };
    },
  },
  {
    name: "net-etcd-member-cut",
    description: "cut one etcd follower off from every other host for longer than the session timeout",
    options: netns,
    run: (env) => etcdMemberCut(env, "follower"),
  },
  {
    name: "net-etcd-leader-cut",
    description: "cut the etcd raft leader off from every other host for longer than the session timeout",
    options: netns,
    run: (env) => etcdMemberCut(env, "leader"),
  },
];
