import { findEtcdLeader } from "../harness/etcd-leader.js";
import { drillTiming as t } from "./environment.js";
import { replicaLeadership, sleep } from "./scenario-helpers.js";
import type { Scenario } from "./scenarios.js";

/** Faults of the etcd cluster itself (on loopback; the partition variants are in scenarios-network.ts). */
export const etcdScenarios: readonly Scenario[] = [
  {
    name: "etcd-leader-kill",
    description: "SIGKILL the etcd raft leader (found with the endpoint status API), restart it later",
    async run(env) {
      const rmLeader = await env.rm.waitForLeader();
      const from = env.rm.replicas.map((r) => r.logs.length);
      const victim = await findEtcdLeader(env.etcd.members);
      const t0 = Date.now();
      await victim.kill();
      const next = await findEtcdLeader(env.etcd.members.filter((m) => m !== victim));
      const etcdElectionMs = Date.now() - t0;
      await sleep(t.sessionTimeoutMs);
      await victim.restart();
      // Nothing visible to the workers (same version, no handler restart: the drill checks
      // both); whether the replica leadership moved behind their backs is reported.
      return {
        workersAlive: true,
        expectSameVersion: true,
        problems: [],
        measured: {
          etcdElectionMs,
          killedMember: victim.name,
          newEtcdLeader: next.name,
          ...(await replicaLeadership(env, rmLeader, from)),
        },
      };
    },
  },
];
