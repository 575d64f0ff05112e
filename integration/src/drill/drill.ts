import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DrillEnvironment } from "./environment.js";
import type { Scenario } from "./scenarios.js";
import {
  itemAccounting,
  maxHandoffGapMs,
  overlaps,
  processOf,
  spans,
  staleLeaderWrites,
  type WorkerEvent,
} from "./timeline.js";

/** One scenario's result, as `pnpm drill --json` prints it. */
export interface DrillReport {
  readonly scenario: string;
  readonly passed: boolean;
  readonly overlaps: number;
  readonly lostItems: number;
  readonly duplicateItems: number;
  /** Duplicates that are not the item in flight when its worker died or was fenced. */
  readonly unexplainedDuplicates: number;
  readonly maxHandoffGapMs: number;
  readonly failoverMs: number | null;
  readonly detectionMs: number | null;
  readonly versionBumps: number;
  readonly staleLeaderWrites: number;
  readonly durationMs: number;
  /** `loopback`, or `netns` when every process ran on a host of its own (virtual network). */
  readonly network: "loopback" | "netns";
  /** Other figures the scenario measured (see each scenario). */
  readonly measured?: Readonly<Record<string, number | string | null>>;
  readonly problems: readonly string[];
}

export interface DrillOptions {
  readonly workers: number;
  readonly items: number;
  readonly itemMs: number;
  /** Time for the whole dataset to be processed after the fault. */
  readonly finishTimeoutMs: number;
  /**
   * Directory to write each run's raw material to, for a post-mortem: `<scenario>-<time>/`
   * with the worker events, every replica's log lines and the recorded etcd writes.
   */
  readonly artifactsDir?: string;
}

export const defaultDrillOptions: DrillOptions = {
  workers: 3,
  items: 600,
  itemMs: 20,
  finishTimeoutMs: 60_000,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one scenario from scratch: fresh etcd, replicas and workers; the fault once the
 * workers are processing; then waits for the dataset to be finished and checks the
 * invariants on the timeline (I1 overlap, I2 lost/duplicate items, I3 nothing moves across
 * a leader fault, I4 no write from a deposed leader, I5 handoff gap).
 */
export async function runDrill(
  scenario: Scenario,
  o: DrillOptions = defaultDrillOptions,
): Promise<DrillReport> {
  const started = Date.now();
  const env = await DrillEnvironment.start({
    workers: o.workers,
    items: o.items,
    itemMs: o.itemMs,
    proxyFirstReplica: scenario.options?.proxyFirstReplica === true,
    network: scenario.options?.network ?? "loopback",
    spareWorkerHosts: scenario.options?.spareWorkerHosts,
    replicaArgs: scenario.options?.replicaArgs,
    dataSource: scenario.options?.dataSource ?? "etcd",
    ...(scenario.options?.auth === undefined ? {} : { auth: scenario.options.auth }),
  });
  const problems: string[] = [];
  try {
    const workerArgs = scenario.options?.workerArgs;
    const first = Array.from({ length: o.workers }, () =>
      env.startWorker(workerArgs === undefined ? {} : { extraArgs: workerArgs }),
    );
    // Steady state first: one active version owning every worker, each processing in it.
    // Generous: on a loaded 2-core machine starting the worker processes takes seconds each.
    const deadline = Date.now() + 60_000;
    let before = await env.assignment();
    while (
      before?.phase !== "active" ||
      Object.keys(before.owners).length !== o.workers ||
      !first.every((w) => w.events.some((e) => e.event === "processed" && e.version === before?.version))
    ) {
      if (Date.now() > deadline) throw new Error(`no steady state within 60 s: ${JSON.stringify(before)}`);
      await sleep(50);
      before = await env.assignment();
    }
    const tFault = Date.now();
    const result = await scenario.run(env);
    problems.push(...result.problems);
    const done = await env.waitForAllProcessed(o.finishTimeoutMs);
    if (done < env.dataset.length)
      problems.push(`only ${done}/${env.dataset.length} items checkpointed in time`);
    await sleep(300);
    const after = await env.assignment();
    const events: WorkerEvent[] = env.events();
    const all = spans(events);
    const ov = overlaps(all, env.dataset);
    const { lost, duplicates } = itemAccounting(events, env.dataset);
    // A duplicate is explained when its first processing was the last thing that worker
    // process did before it died, was paused or was fenced: the item in flight at the fault.
    const dead = new Set(env.workers.filter((w) => !w.running).map((w) => processOf(w)));
    const unexplained = duplicates.filter(({ by }) => {
      const first = by[0];
      if (first === undefined) return false;
      const who = processOf(first);
      const mine = events.filter((e) => processOf(e) === who && e.t > first.t);
      const nextProcessed = mine.find((e) => e.event === "processed")?.t ?? Number.POSITIVE_INFINITY;
      const interruptedAt =
        mine.find((e) => e.event === "fenced" || e.event === "disconnected")?.t ??
        (dead.has(who) ? Number.POSITIVE_INFINITY : undefined);
      return interruptedAt === undefined || nextProcessed < interruptedAt;
    });
    if (ov.length > 0)
      problems.push(`${ov.length} overlapping processing spans, e.g. ${JSON.stringify(ov[0])}`);
    if (lost.length > 0) problems.push(`${lost.length} items never processed`);
    if (unexplained.length > 0)
      problems.push(
        `${unexplained.length} duplicates not explained by a fault, e.g. ${JSON.stringify(unexplained[0])}`,
      );
    if (result.expectSameVersion && result.workersAlive) {
      if (after?.version !== before?.version)
        problems.push(
          `version moved from ${before?.version} to ${after?.version} across a leader-side fault`,
        );
      const restarted = events.filter((e) => e.event === "shard_started" && e.t > tFault);
      if (restarted.length > 0 && result.handlersMayRestart !== true)
        problems.push(`${restarted.length} shard handlers restarted after the fault`);
    }
    // The drill group only: a scenario may write garbage into another group on purpose.
    const stale = staleLeaderWrites(
      env.etcdEvents,
      `${env.namespace}/election/leader/`,
      `/groups/${env.group}/assignment`,
    );
    if (stale.length > 0)
      problems.push(`${stale.length} assignment writes not from the leader of their revision`);
    return {
      scenario: scenario.name,
      passed: problems.length === 0,
      overlaps: ov.length,
      lostItems: lost.length,
      duplicateItems: duplicates.length,
      unexplainedDuplicates: unexplained.length,
      maxHandoffGapMs: maxHandoffGapMs(all, env.dataset, tFault),
      failoverMs: result.failoverMs ?? null,
      detectionMs: result.detectionMs ?? null,
      versionBumps: (after?.version ?? 0) - (before?.version ?? 0),
      staleLeaderWrites: stale.length,
      durationMs: Date.now() - started,
      network: scenario.options?.network ?? "loopback",
      ...(result.measured === undefined ? {} : { measured: result.measured }),
      problems,
    };
  } finally {
    if (o.artifactsDir !== undefined)
      await writeArtifacts(join(o.artifactsDir, `${scenario.name}-${started}`), env).catch((e: unknown) =>
        process.stderr.write(`drill: could not write artifacts: ${String(e)}\n`),
      );
    await env.stop();
  }
}

/** Writes what a run saw, one JSON line per event, for reading after the fact. */
async function writeArtifacts(dir: string, env: DrillEnvironment): Promise<void> {
  await mkdir(dir, { recursive: true });
  const lines = (xs: readonly unknown[]) => xs.map((x) => `${JSON.stringify(x)}\n`).join("");
  await writeFile(join(dir, "workers.jsonl"), lines([...env.events()].sort((a, b) => a.t - b.t)));
  await writeFile(join(dir, "etcd.jsonl"), lines(env.etcdEvents));
  for (const r of env.rm.replicas) {
    // Replica log times are this process's performance.now(); add the wall clock for reading.
    const wall = (at: number) => Math.round(performance.timeOrigin + at);
    await writeFile(
      join(dir, `${r.id}.jsonl`),
      lines([
        ...r.logs.map((l) => ({ wall: wall(l.at), ...l })),
        ...r.stderr.map((line) => ({ stderr: line })),
      ]),
    );
  }
  for (const w of env.workers)
    if (w.stderr.length > 0)
      await writeFile(join(dir, `${w.node}-${w.incarnation ?? 1}.stderr`), `${w.stderr.join("\n")}\n`);
}
