import { drillTiming } from "./environment.js";
import { timeNewLeader, waitForExpulsion } from "./scenario-helpers.js";
import type { Scenario } from "./scenarios.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The dataset drill with the PostgreSQL source: the same workers, checkpoint and invariants
 * (0 overlaps, 0 lost items), with the group's records read from a real PostgreSQL through
 * FetchShardData, under faults of the replicas, the workers and the database itself.
 */
export const postgresScenarios: readonly Scenario[] = [
  {
    name: "postgres-leader-kill",
    description: "workers read their shards from PostgreSQL; SIGKILL the leading replica",
    options: { dataSource: "postgres" },
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const t0 = Date.now();
      await leader.kill();
      const failoverMs = await timeNewLeader(env, leader, t0);
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems: [] };
    },
  },
  {
    name: "postgres-restart",
    description:
      "the database goes down for 2 s mid-read: streams end with UNAVAILABLE, each worker's SDK resumes after its last record",
    options: { dataSource: "postgres" },
    async run(env) {
      const db = env.postgres;
      if (db === undefined) throw new Error("no PostgreSQL in this drill");
      await db.stopServer();
      await sleep(2000);
      await db.start();
      return {
        workersAlive: true,
        expectSameVersion: true,
        problems: [],
        measured: { outageMs: 2000 },
      };
    },
  },
  {
    name: "postgres-worker-kill",
    description:
      "workers read from PostgreSQL; SIGKILL one: the shard count changes (modulo), the new count's shard index is built on demand",
    options: { dataSource: "postgres" },
    async run(env) {
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const t0 = Date.now();
      victim.signal("SIGKILL");
      const detectionMs = await waitForExpulsion(env, "worker-1", t0, drillTiming.sessionTimeoutMs * 3);
      return {
        detectionMs,
        workersAlive: false,
        expectSameVersion: false,
        problems: detectionMs === undefined ? ["never expelled"] : [],
      };
    },
  },
];
