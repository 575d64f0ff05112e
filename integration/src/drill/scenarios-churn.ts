import { drillTiming as t } from "./environment.js";
import { assignmentWrites, sleep, waitForExpulsion } from "./scenario-helpers.js";
import type { Scenario } from "./scenarios.js";

/**
 * How long after a member's expulsion its shards may wait for an active version while
 * membership keeps changing: the rebalance debounce's maximum wait (`--rebalance-max-delay`,
 * by default 5x the delay), plus a pending version's handoff and the drill's polling slack.
 */
const reassignBoundMs = t.rebalanceDelayMs * 5 + 2000;

export const churnScenarios: readonly Scenario[] = [
  {
    name: "worker-crashloop",
    description: "a worker crash-loops (SIGKILL + restart ~1 s, 15 times) while another is killed",
    async run(env) {
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const loop = env.crashLoop({ node: "crashloop", times: 15, periodMs: 1000 });
      // Churn first: the crash-looper's first process joins (and gets a version of its own).
      const deadline = Date.now() + 30_000;
      while (!env.workers.some((w) => w.node === "crashloop" && w.events.some((e) => e.event === "joined"))) {
        if (Date.now() > deadline) throw new Error("the crash-looping worker never joined");
        await sleep(50);
      }
      await sleep(t.rebalanceDelayMs * 2);
      // The member whose shards must not stay unowned: killed while the churn goes on.
      const t0 = Date.now();
      victim.signal("SIGKILL");
      const expelMs = await waitForExpulsion(env, victim.node, t0, t.sessionTimeoutMs * 3);
      const { starts, joins, endedAt } = await loop;
      const problems: string[] = [];
      let reassignedMs: number | null = null;
      if (expelMs === undefined) problems.push(`${victim.node} was never expelled`);
      else {
        const expelledAt = t0 + expelMs;
        const active = assignmentWrites(env).find(
          ({ at, record }) =>
            at >= expelledAt && record.phase === "active" && record.owners[victim.node] === undefined,
        );
        if (active === undefined || active.at > endedAt)
          problems.push(
            `no active version without ${victim.node} while the crash loop ran (${endedAt - expelledAt} ms after its expulsion)`,
          );
        reassignedMs = active === undefined ? null : active.at - expelledAt;
        if (reassignedMs !== null && reassignedMs > reassignBoundMs)
          problems.push(
            `${victim.node}'s shards waited ${reassignedMs} ms for an active version (bound ${reassignBoundMs})`,
          );
      }
      const versions = new Set(
        assignmentWrites(env)
          .filter(({ at }) => at >= t0 && at <= endedAt)
          .map(({ record }) => record.version),
      ).size;
      return {
        detectionMs: expelMs,
        workersAlive: false,
        expectSameVersion: false,
        problems,
        measured: {
          crashLoopStarts: starts,
          crashLoopJoins: joins,
          reassignedAfterExpulsionMs: reassignedMs,
          versionsDuringLoop: versions,
        },
      };
    },
  },
];
