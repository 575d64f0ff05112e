import { status } from "@grpc/grpc-js";
import { AssignmentPhase, type CoordinatorMessage } from "@org/proto";
import { connectWorker, type Worker } from "@org/worker-sdk";
import { JobProcess } from "../support/job-process.js";
import { RawStream } from "../support/raw-client.js";
import { RmProcess } from "../support/rm-cluster.js";
import { drillTiming } from "./environment.js";
import type { Scenario, ScenarioResult } from "./scenarios.js";

// Identity, incarnations, versions, bad records and settings under a running dataset job:
// each fault is something an outside client or an operator can do, and the timeline checker
// must still find 0 overlaps and 0 lost items.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t = drillTiming;

function phaseOf(m: CoordinatorMessage): AssignmentPhase | undefined {
  const k = m.kind;
  if (k.case === "welcome") return k.value.assignment?.phase;
  if (k.case === "assignment") return k.value.phase;
  if (k.case === "heartbeatAck") return k.value.phase;
  return undefined;
}

/** A raw client that says Hello and heartbeats like a worker, but runs nothing. */
function impostor(address: string, group: string, nodeId: string): { s: RawStream; stop: () => void } {
  const s = new RawStream(address);
  s.hello(group, nodeId);
  const beat = setInterval(() => s.heartbeat(nodeId), t.heartbeatIntervalMs * 0.8);
  return {
    s,
    stop: () => {
      clearInterval(beat);
      s.close();
    },
  };
}

export const identityScenarios: readonly Scenario[] = [
  {
    name: "tokenless-takeover",
    description:
      "SIGKILL the leader, then a raw client says Hello for a live worker's node id without its token",
    async run(env) {
      const problems: string[] = [];
      const leader = await env.rm.waitForLeader();
      const killedAt = Date.now();
      await leader.kill();
      const next = await env.rm.waitForLeader({ not: leader, timeoutMs: 30_000 });
      const { s, stop } = impostor(next.address, env.group, "worker-2");
      try {
        const first = await Promise.race([
          s.waitFor((m) => m.kind.case === "welcome", 10_000).then(() => "welcome" as const),
          s.ended.then((e) => e.code),
        ]);
        if (first === "welcome") {
          // Welcomed as a new incarnation: it must be held until the real worker-2's fence ran out.
          const active = await s
            .waitFor((m) => phaseOf(m) === AssignmentPhase.ACTIVE, t.sessionTimeoutMs * 3)
            .then(
              () => Date.now(),
              () => undefined,
            );
          if (active !== undefined && active - killedAt < t.sessionTimeoutMs)
            problems.push(
              `the impostor got ACTIVE ${active - killedAt} ms after the kill, before the session timeout`,
            );
        } else if (first !== status.ALREADY_EXISTS) {
          problems.push(`the impostor's Hello ended with ${status[first]}, not a welcome or ALREADY_EXISTS`);
        }
      } finally {
        stop();
      }
      return { workersAlive: false, expectSameVersion: false, problems };
    },
  },
  {
    name: "twin-hellos",
    description: "two raw streams say Hello for the same new node id at the same moment",
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const [a, b] = [
        impostor(leader.address, env.group, "twin"),
        impostor(leader.address, env.group, "twin"),
      ];
      const outcome = await Promise.all(
        [a, b].map(({ s }) =>
          Promise.race([
            s.waitFor((m) => m.kind.case === "welcome", 10_000).then(() => "welcome" as const),
            s.ended.then((e) => status[e.code]),
          ]),
        ),
      );
      await sleep(1000);
      a.stop();
      b.stop();
      const welcomed = outcome.filter((o) => o === "welcome").length;
      return {
        workersAlive: false,
        expectSameVersion: false,
        problems: welcomed === 1 ? [] : [`${welcomed} twins were welcomed (${outcome.join(", ")})`],
      };
    },
  },
  {
    name: "duplicate-deployment",
    description: "a second worker process started with a live worker's node id",
    async run(env) {
      const problems: string[] = [];
      const dup = new JobProcess({
        node: "worker-1",
        group: env.group,
        coordinators: env.rm.addresses,
        itemMs: 20,
        loop: false,
        checkpointEtcd: env.etcd.endpoints,
        checkpointPrefix: `${env.namespace}/checkpoints/`,
      });
      env.workers.push(dup);
      await sleep(t.sessionTimeoutMs);
      if (dup.events.some((e) => e.event === "shard_started"))
        problems.push("the duplicate process started a shard");
      await dup.stop();
      return { workersAlive: true, expectSameVersion: true, problems };
    },
  },
  {
    name: "assignment-deleted",
    description: "delete the group's assignment key while workers run, then SIGKILL the leader",
    async run(env) {
      const problems: string[] = [];
      const before = (await env.assignment())?.version ?? 0;
      await env.client.delete().key(`${env.namespace}/groups/${env.group}/assignment`);
      const leader = await env.rm.waitForLeader();
      const t0 = Date.now();
      await leader.kill();
      await env.rm.waitForLeader({ not: leader, timeoutMs: 30_000 });
      const failoverMs = Date.now() - t0;
      const deadline = Date.now() + 30_000;
      let after = await env.assignment();
      while ((after === null || after.phase !== "active") && Date.now() < deadline) {
        await sleep(100);
        after = await env.assignment();
      }
      if (after === null || after.version <= before)
        problems.push(
          `after the key was lost the version went from ${before} to ${after?.version ?? "none"}, not up`,
        );
      return { failoverMs, workersAlive: true, expectSameVersion: false, handlersMayRestart: true, problems };
    },
  },
  {
    name: "corrupt-records",
    description: "garbage in another group's assignment, config and a member record, then SIGKILL the leader",
    async run(env) {
      const problems: string[] = [];
      const other = "other";
      const workers: Worker[] = [];
      try {
        for (const n of ["o-1", "o-2"])
          workers.push(await connectWorker({ coordinators: env.rm.addresses, group: other, nodeId: n }));
        await sleep(t.rebalanceDelayMs * 4);
        const p = `${env.namespace}/groups/${other}`;
        await env.client.put(`${p}/assignment`).value('{"version": 3, "phase": "act');
        await env.client.put(`${p}/config`).value('{"strategy": "nonsense"}');
        const memberKey = `${p}/members/o-2`;
        const lease = (await env.client.get(memberKey).exec()).kvs[0]?.lease ?? "0";
        await env.client.put(memberKey).value("{").lease(lease);
        const leader = await env.rm.waitForLeader();
        const t0 = Date.now();
        await leader.kill();
        const next = await env.rm.waitForLeader({ not: leader, timeoutMs: 30_000 });
        const failoverMs = Date.now() - t0;
        await sleep(t.sessionTimeoutMs);
        const st = (await (await fetch(`${next.httpUrl}/status`)).json()) as {
          groups: { group: string; degraded: Record<string, string> }[];
        };
        const deg = st.groups.find((g) => g.group === other)?.degraded ?? {};
        for (const reason of ["assignment_invalid", "config_invalid"])
          if (deg[reason] === undefined)
            problems.push(`group ${other} is not reported degraded for ${reason}`);
        if (Object.keys(st.groups.find((g) => g.group === env.group)?.degraded ?? { x: 1 }).length > 0)
          problems.push(`the drill group is reported degraded`);
        return { failoverMs, workersAlive: true, expectSameVersion: true, problems };
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    },
  },
  {
    name: "different-settings",
    description:
      "restart each replica in turn with a different session timeout (the cluster's settings must win)",
    async run(env) {
      const problems: string[] = [];
      let failoverMs = 0;
      for (const [i, r] of env.rm.replicas.entries()) {
        const wasLeader = (await r.status().catch(() => undefined))?.role === "leader";
        const t0 = Date.now();
        await r.stop();
        if (wasLeader) {
          await env.rm.waitForLeader({ not: r, timeoutMs: 30_000 });
          failoverMs = Math.max(failoverMs, Date.now() - t0);
        }
        const odd = new RmProcess({
          ...r.options,
          // Each different from the cluster's 4 s (shorter, then longer), each within the
          // replica's own consistency rules.
          args: [...(r.options.args ?? []), "--session-timeout", String([3000, 5000, 7000][i] ?? 3000)],
        });
        env.rm.replicas[i] = odd;
        odd.start();
        await odd.waitForLog((l) => l.event === "grpc_listening", 15_000);
        await sleep(1000);
      }
      // Make one of the odd replicas lead: it must say it adopted the cluster's settings.
      const leader = await env.rm.waitForLeader();
      if (
        !leader.logs.some(
          (l) => l.event === "cluster_settings_adopted" || l.event === "cluster_settings_created",
        )
      )
        problems.push(`the leader ${leader.id} neither adopted nor created the cluster settings`);
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems } satisfies ScenarioResult;
    },
  },
  {
    name: "worker-rolling-restart",
    description:
      "restart every worker in turn with a planned restart (SIGTERM -> close({ restart: true })): no version, no overlap",
    options: { workerArgs: ["--on-sigterm", "restart"] },
    async run(env) {
      const problems: string[] = [];
      const before = (await env.assignment())?.version ?? 0;
      let longestRestartMs = 0;
      for (const old of [...env.workers]) {
        if (!old.running) continue;
        const t0 = Date.now();
        old.signal("SIGTERM");
        await old.exited;
        // The next process under the same node id: a new incarnation whose predecessor
        // released, so it gets the same shards at once.
        const next = env.startWorker({ node: old.node, extraArgs: ["--on-sigterm", "restart"] });
        await next.waitFor((e) => e.event === "shard_started", 30_000);
        longestRestartMs = Math.max(longestRestartMs, Date.now() - t0);
      }
      const after = (await env.assignment())?.version ?? 0;
      if (after !== before) problems.push(`a rolling restart moved the version from ${before} to ${after}`);
      return {
        workersAlive: false,
        expectSameVersion: false,
        problems,
        measured: { longestRestartMs },
      };
    },
  },
];
