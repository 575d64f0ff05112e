/** One line a task-worker process printed (examples/src/task-worker.ts). */
export interface TaskLine {
  readonly t: number;
  readonly node: string;
  readonly event: string;
  readonly task?: string;
  readonly attempt?: number;
  readonly outcome?: string;
}

/**
 * One attempt as it ran on one worker: from its start line to its last work, that is its
 * end line when it succeeded, its last step line (or its start) when it was aborted (the
 * abort's own line comes after the work stopped, e.g. after a pause), the kill time when its
 * worker was killed first (what it did before dying is not known).
 */
export interface AttemptSpan {
  readonly node: string;
  readonly task: string;
  readonly attempt: number;
  readonly start: number;
  /** The time of its last work (see above); +Infinity when it never ended on a live worker. */
  readonly end: number;
  /** `succeeded`, `aborted`, or `killed` (its worker died while it ran), `open` (never ended). */
  readonly outcome: string;
}

/** What the task invariants found. */
export interface TaskAccounting {
  readonly spans: readonly AttemptSpan[];
  /** Submitted tasks whose final state is not succeeded. */
  readonly tasksLost: number;
  /** Pairs of attempts of one task that ran at the same time. */
  readonly attemptOverlaps: number;
  /** Runs beyond the first of one task's work that completed or was killed mid-way. */
  readonly duplicateAttempts: number;
  /** Duplicates not explained by an attempt in flight on a worker that died or was aborted. */
  readonly unexplainedDuplicates: number;
  /** Attempts that never ended on a worker that is still alive. */
  readonly openAttempts: number;
  /** The runs behind `unexplainedDuplicates`: a completed run that another run followed. */
  readonly unexplained: readonly AttemptSpan[];
}

/**
 * Checks the task invariants on the worker processes' lines: every task succeeded (none
 * lost), no two attempts of one task overlap in time, and a task ran more than once only
 * when an earlier run was cut short (its worker was killed, or its handler aborted) or its
 * outcome never reached the leader because its worker was lost first.
 * `killedAt` maps each SIGKILLed node to the kill time. `unreported` maps a node a fault
 * took away (killed, or paused past its session timeout) to the attempts (`task#attempt`)
 * the leader still had in flight on it right after the fault: a run of one of those that
 * finished on the worker (its end line printed) had not had its report delivered when the
 * worker stopped, so running it again is the at-least-once case of an attempt in flight on
 * a dead worker, not a lost report.
 */
export function taskAccounting(
  lines: readonly TaskLine[],
  finalStates: ReadonlyMap<string, string>,
  killedAt: ReadonlyMap<string, number>,
  unreported: ReadonlyMap<string, ReadonlySet<string>> = new Map(),
): TaskAccounting {
  const open = new Map<
    string,
    { node: string; task: string; attempt: number; start: number; last: number }
  >();
  const spans: AttemptSpan[] = [];
  const key = (node: string, task: string, attempt: number) => `${node}\u0000${task}\u0000${attempt}`;
  for (const l of [...lines].sort((a, b) => a.t - b.t)) {
    if (l.task === undefined || l.attempt === undefined) continue;
    const k = key(l.node, l.task, l.attempt);
    if (l.event === "task_start")
      open.set(k, { node: l.node, task: l.task, attempt: l.attempt, start: l.t, last: l.t });
    else if (l.event === "task_step") {
      const s = open.get(k);
      if (s !== undefined) s.last = l.t;
    } else if (l.event === "task_end") {
      const s = open.get(k);
      if (s === undefined) continue;
      open.delete(k);
      const { last, ...run } = s;
      spans.push(
        l.outcome === "succeeded"
          ? { ...run, end: l.t, outcome: "succeeded" }
          : { ...run, end: last, outcome: "aborted" },
      );
    }
  }
  for (const s of open.values()) {
    const k = killedAt.get(s.node);
    spans.push(
      k === undefined
        ? { ...s, end: Number.POSITIVE_INFINITY, outcome: "open" }
        : { ...s, end: k, outcome: "killed" },
    );
  }
  const byTask = new Map<string, AttemptSpan[]>();
  for (const s of spans) byTask.set(s.task, [...(byTask.get(s.task) ?? []), s]);
  let attemptOverlaps = 0;
  let duplicateAttempts = 0;
  let unexplainedDuplicates = 0;
  const unexplained: AttemptSpan[] = [];
  for (const runs of byTask.values()) {
    runs.sort((a, b) => a.start - b.start);
    for (let i = 0; i < runs.length; i++)
      for (let j = i + 1; j < runs.length; j++) {
        const a = runs[i];
        const b = runs[j];
        if (a !== undefined && b !== undefined && b.start < a.end) attemptOverlaps += 1;
      }
    // The work ran more than once: more than one run that was not aborted by the SDK.
    const ran = runs.filter((r) => r.outcome !== "aborted");
    if (ran.length > 1) {
      duplicateAttempts += ran.length - 1;
      // Explained: every run but the last was killed with its worker, or ended on a worker
      // the fault took before its report reached the leader.
      const notKilled = ran
        .slice(0, -1)
        .filter(
          (r) => r.outcome !== "killed" && unreported.get(r.node)?.has(`${r.task}#${r.attempt}`) !== true,
        );
      unexplainedDuplicates += notKilled.length;
      unexplained.push(...notKilled);
    }
  }
  let tasksLost = 0;
  for (const state of finalStates.values()) if (state !== "succeeded") tasksLost += 1;
  const openAttempts = spans.filter((s) => s.outcome === "open").length;
  return {
    spans,
    tasksLost,
    attemptOverlaps,
    duplicateAttempts,
    unexplainedDuplicates,
    openAttempts,
    unexplained,
  };
}
