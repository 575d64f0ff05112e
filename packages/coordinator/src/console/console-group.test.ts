import { describe, expect, it } from "vitest";
import type { GroupSnapshot } from "../membership/group.js";
import type { AssignmentRecord } from "../store/records.js";
import { consoleGroup, ownerArray, runningOwners } from "./console-group.js";

const assignment = (a: Partial<AssignmentRecord>): AssignmentRecord => ({
  version: 3,
  phase: "active",
  totalShards: 4,
  strategy: "sticky",
  owners: {},
  awaitingRelease: [],
  previousOwners: {},
  previousTotalShards: 0,
  leaderEpoch: 7,
  updatedAt: "2026-01-01T00:00:00.000Z",
  ...a,
});

const snapshot = (a: AssignmentRecord | undefined, awaitingRelease: string[] = []): GroupSnapshot => ({
  group: "g",
  members: [],
  assignment: a,
  degraded: {},
  ownershipUnknown: false,
  awaitingRelease,
});

describe("console group view", () => {
  it("maps owners to shards", () => {
    expect(ownerArray({ a: [0, 2], b: [1] }, 4)).toEqual(["a", "b", "a", null]);
  });

  it("while pending, a moving shard has no running owner; a kept one keeps its owner", () => {
    const pending = assignment({
      phase: "pending",
      owners: { a: [0, 1], b: [2, 3] },
      previousOwners: { a: [0, 1, 2], c: [3] },
      awaitingRelease: ["a"],
    });
    expect(runningOwners(snapshot(pending, ["a"]))).toEqual(["a", "a", null, null]);
    const view = consoleGroup(snapshot(pending, ["a"]), undefined, []);
    expect(view.moves).toEqual([
      { shard: 2, from: "a", to: "b" },
      { shard: 3, from: "c", to: "b" },
    ]);
    expect(view.awaitingRelease).toEqual(["a"]);
    expect(view.released).toEqual(["c"]);
    expect(view.tasks).toBeNull();
  });

  it("an active version has no moves; a group without a version is empty", () => {
    const active = consoleGroup(snapshot(assignment({ owners: { a: [0, 1, 2, 3] } })), undefined, []);
    expect(active.moves).toEqual([]);
    expect(active.owners).toEqual(["a", "a", "a", "a"]);
    const none = consoleGroup(snapshot(undefined), undefined, []);
    expect([none.version, none.phase, none.owners]).toEqual([null, null, []]);
  });
});
