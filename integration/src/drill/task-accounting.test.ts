import { describe, expect, it } from "vitest";
import { type TaskLine, taskAccounting } from "./task-accounting.js";

const start = (t: number, node: string, task: string, attempt: number): TaskLine => ({
  t,
  node,
  event: "task_start",
  task,
  attempt,
});
const end = (t: number, node: string, task: string, attempt: number, outcome = "succeeded"): TaskLine => ({
  t,
  node,
  event: "task_end",
  task,
  attempt,
  outcome,
});

describe("taskAccounting", () => {
  it("a clean run: nothing lost, no overlap, no duplicate", () => {
    const a = taskAccounting(
      [start(1, "w1", "a", 1), end(5, "w1", "a", 1), start(2, "w2", "b", 1), end(3, "w2", "b", 1)],
      new Map([
        ["a", "succeeded"],
        ["b", "succeeded"],
      ]),
      new Map(),
    );
    expect(a).toMatchObject({ tasksLost: 0, attemptOverlaps: 0, duplicateAttempts: 0, openAttempts: 0 });
  });

  it("an attempt killed with its worker and run again later: an explained duplicate", () => {
    const a = taskAccounting(
      [start(1, "w1", "a", 1), start(20, "w2", "a", 2), end(25, "w2", "a", 2)],
      new Map([["a", "succeeded"]]),
      new Map([["w1", 10]]),
    );
    expect(a).toMatchObject({ attemptOverlaps: 0, duplicateAttempts: 1, unexplainedDuplicates: 0 });
  });

  it("a run that finished on a worker lost before its report reached the leader: explained only when the leader still had it in flight", () => {
    // w1 prints its end line at 9 and is stopped at 10 before the report leaves; the leader
    // expels it and runs attempt 2 on w2.
    const lines = [
      start(1, "w1", "a", 1),
      end(9, "w1", "a", 1),
      start(20, "w2", "a", 2),
      end(25, "w2", "a", 2),
    ];
    const states = new Map([["a", "succeeded"]]);
    const explained = taskAccounting(lines, states, new Map(), new Map([["w1", new Set(["a#1"])]]));
    expect(explained).toMatchObject({ attemptOverlaps: 0, duplicateAttempts: 1, unexplainedDuplicates: 0 });
    // The leader had recorded it (not in flight at the fault), or another attempt was: unexplained.
    for (const unreported of [
      new Map(),
      new Map([["w1", new Set(["a#2"])]]),
      new Map([["w2", new Set(["a#1"])]]),
    ]) {
      const a = taskAccounting(lines, states, new Map(), unreported);
      expect(a).toMatchObject({ duplicateAttempts: 1, unexplainedDuplicates: 1 });
    }
  });

  it("counts overlaps (a second attempt before the first ended or its worker died), lost tasks and unexplained runs", () => {
    const a = taskAccounting(
      [
        start(1, "w1", "a", 1),
        start(5, "w2", "a", 2),
        end(8, "w2", "a", 2),
        start(1, "w1", "b", 1),
        end(2, "w1", "b", 1),
        start(3, "w2", "b", 2),
        end(4, "w2", "b", 2),
        start(1, "w3", "c", 1),
        end(2, "w3", "c", 1, "aborted"),
        start(3, "w3", "c", 2),
      ],
      new Map([
        ["a", "succeeded"],
        ["b", "succeeded"],
        ["c", "queued"],
      ]),
      new Map([["w1", 10]]),
    );
    expect(a).toMatchObject({
      tasksLost: 1,
      attemptOverlaps: 1,
      duplicateAttempts: 2,
      unexplainedDuplicates: 1,
      openAttempts: 1,
    });
  });

  it("an aborted run ends at its last step: a paused worker's abort line after the pause is no overlap, a step after it is", () => {
    const step = (t: number, node: string, task: string, attempt: number): TaskLine => ({
      t,
      node,
      event: "task_step",
      task,
      attempt,
    });
    const lines = [
      start(1, "w1", "a", 1),
      step(2, "w1", "a", 1),
      start(10, "w2", "a", 2),
      end(12, "w2", "a", 2),
    ];
    const states = new Map([["a", "succeeded"]]);
    // Paused from 3 to 20: its abort line comes after attempt 2 ran.
    const ok = taskAccounting([...lines, end(20, "w1", "a", 1, "aborted")], states, new Map());
    expect(ok).toMatchObject({ attemptOverlaps: 0, duplicateAttempts: 0 });
    // The same, but it did a step of work at 11 (while attempt 2 ran) before noticing.
    const bad = taskAccounting(
      [...lines, step(11, "w1", "a", 1), end(20, "w1", "a", 1, "aborted")],
      states,
      new Map(),
    );
    expect(bad.attemptOverlaps).toBe(1);
  });
});
