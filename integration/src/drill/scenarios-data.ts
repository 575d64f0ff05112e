import { keyLayout, loadShardData, sequentialRecords } from "@org/coordinator";
import type { DrillEnvironment } from "./environment.js";
import type { Scenario } from "./scenarios.js";

/** Records loaded by `leader-failover-big-data` (issue 9, defect 4 used 150,000). */
export const bigDataRecords = 200_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until every running worker has (re)connected after `t0`; returns the ms from `t0`
 * to the last of them, or undefined at the timeout.
 */
async function waitForReattach(
  env: DrillEnvironment,
  t0: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const times = env.workers
      .filter((w) => w.running)
      .map((w) => w.events.find((e) => e.event === "connected" && e.t > t0)?.t);
    if (times.every((t) => t !== undefined)) return Math.max(t0, ...(times as number[])) - t0;
    await sleep(20);
  }
  return undefined;
}

/**
 * Drill scenarios about the data plane. Register them beside the others (the drill CLI runs
 * every scenario of the lists it combines): `[...scenarios, ...dataScenarios]`.
 */
export const dataScenarios: readonly Scenario[] = [
  {
    name: "leader-failover-big-data",
    description: `${bigDataRecords.toLocaleString("en-US")} data records loaded, then SIGKILL the leader: a new leader serves, workers keep their version`,
    async run(env) {
      const problems: string[] = [];
      const keys = keyLayout(env.namespace);
      // Another group's dataset, loaded as `coordinator data load` does: the old layout put
      // it under <ns>/groups/, where the leader's load read it in one range (defect 4).
      const tLoad = Date.now();
      const loaded = await loadShardData(env.client, keys, "bulk", sequentialRecords(bigDataRecords), {
        concurrency: 8,
      });
      const loadMs = Date.now() - tLoad;
      const stored = await env.client.getAll().prefix(keys.dataGroupPrefix("bulk")).count();
      if (stored !== bigDataRecords + 1)
        problems.push(`expected ${bigDataRecords} records and the layout key, found ${stored} keys`);
      const leader = await env.rm.waitForLeader();
      const t0 = Date.now();
      await leader.kill();
      let failoverMs: number | undefined;
      try {
        await env.rm.waitForLeader({ not: leader, timeoutMs: 30_000 });
        failoverMs = Date.now() - t0;
      } catch {
        problems.push(`no new leader within 30 s of the kill with ${bigDataRecords} records loaded`);
      }
      const reattachMs = await waitForReattach(env, t0, 30_000);
      if (reattachMs === undefined)
        problems.push("not every worker reconnected to the new leader within 30 s");
      process.stderr.write(
        `${JSON.stringify({
          scenario: "leader-failover-big-data",
          records: loaded.records,
          buckets: loaded.layout.buckets,
          loadMs,
          failoverMs,
          reattachMs,
        })}\n`,
      );
      return {
        ...(failoverMs === undefined ? {} : { failoverMs }),
        workersAlive: true,
        expectSameVersion: true,
        problems,
      };
    },
  },
];
