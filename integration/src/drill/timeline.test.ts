import { describe, expect, it } from "vitest";
import {
  type EtcdEvent,
  itemAccounting,
  maxHandoffGapMs,
  overlaps,
  spans,
  staleLeaderWrites,
  type WorkerEvent,
} from "./timeline.js";

const ev = (t: number, node: string, event: string, extra: Partial<WorkerEvent> = {}): WorkerEvent => ({
  t,
  node,
  event,
  ...extra,
});
const s = (shard: number, totalShards = 2) => ({ shard, totalShards, version: 1 });

describe("timeline invariants", () => {
  it("finds no overlap in a clean handoff, and reports the gap", () => {
    const events = [
      ev(0, "a", "shard_started", s(0)),
      ev(10, "a", "processed", { ...s(0), id: "0" }),
      ev(20, "a", "shard_stopped", s(0)),
      ev(50, "b", "shard_started", s(0)),
      ev(60, "b", "processed", { ...s(0), id: "2" }),
    ];
    const sp = spans(events);
    expect(overlaps(sp, ["0", "1", "2", "3"])).toEqual([]);
    expect(maxHandoffGapMs(sp, ["0", "2"])).toBe(30);
  });

  it("flags two workers processing the same shard at once", () => {
    const events = [
      ev(0, "a", "shard_started", s(1)),
      ev(10, "a", "processed", { ...s(1), id: "1" }),
      ev(5, "b", "shard_started", s(1)),
      ev(8, "b", "processed", { ...s(1), id: "3" }),
      ev(30, "a", "processed", { ...s(1), id: "5" }),
    ];
    const found = overlaps(spans(events), ["0", "1", "2", "3"]);
    expect(found).toHaveLength(1);
    expect(found[0]?.item).toBe("1");
  });

  it("a paused worker that processed nothing while paused does not overlap its successor", () => {
    const events = [
      ev(0, "a", "shard_started", s(0)),
      ev(10, "a", "processed", { ...s(0), id: "0" }),
      // paused from 11 to 5000; b owns the shard from 4000
      ev(4000, "b", "shard_started", s(0)),
      ev(4010, "b", "processed", { ...s(0), id: "2" }),
      ev(5001, "a", "fenced"),
    ];
    expect(overlaps(spans(events), ["0", "1", "2", "3"])).toEqual([]);
  });

  it("processing outside any stint is caught as an overlap with the owner", () => {
    const events = [
      ev(0, "b", "shard_started", s(0)),
      ev(5, "b", "processed", { ...s(0), id: "0" }),
      ev(6, "a", "processed", { ...s(0), id: "2" }),
      ev(9, "b", "processed", { ...s(0), id: "4" }),
    ];
    expect(overlaps(spans(events), ["0", "1", "2", "3", "4"])).toHaveLength(1);
  });

  it("counts lost and duplicate items with attribution", () => {
    const events = [
      ev(1, "a", "processed", { id: "0" }),
      ev(2, "b", "processed", { id: "0" }),
      ev(3, "a", "processed", { id: "1" }),
    ];
    const r = itemAccounting(events, ["0", "1", "2"]);
    expect(r.lost).toEqual(["2"]);
    expect(r.duplicates).toEqual([
      {
        id: "0",
        by: [
          { node: "a", t: 1 },
          { node: "b", t: 2 },
        ],
      },
    ]);
  });

  it("lists who processed a duplicate in time order, whatever order the events came in", () => {
    // Events come grouped per process: a later process's lines after an earlier one's.
    const events = [
      ev(20, "b", "processed", { id: "7" }),
      ev(10, "a", "processed", { id: "7", incarnation: 3 }),
    ];
    expect(itemAccounting(events, ["7"]).duplicates).toEqual([
      {
        id: "7",
        by: [
          { node: "a", incarnation: 3, t: 10 },
          { node: "b", t: 20 },
        ],
      },
    ]);
  });

  it("measures the gap per item, across a reshape (modulo shard count change)", () => {
    // Item "4" is shard 0 of 2, then shard 1 of 3: covered until 100, again from 350.
    const events = [
      ev(0, "a", "shard_started", s(0, 2)),
      ev(100, "a", "shard_stopped", s(0, 2)),
      ev(350, "b", "shard_started", s(1, 3)),
      ev(400, "b", "shard_stopped", s(1, 3)),
    ];
    expect(maxHandoffGapMs(spans(events), ["4"])).toBe(250);
    // Item "3" (shard 1 of 2, then shard 0 of 3) has no owner in this timeline: no gap.
    expect(maxHandoffGapMs(spans(events), ["3"])).toBe(0);
  });

  it("flags an assignment write whose epoch is not the oldest live candidate's", () => {
    const put = (key: string, rev: number, create: number, value = ""): EtcdEvent => ({
      at: rev,
      type: "put",
      key,
      modRevision: rev,
      createRevision: create,
      value,
    });
    const del = (key: string, rev: number): EtcdEvent => ({
      at: rev,
      type: "delete",
      key,
      modRevision: rev,
      createRevision: 0,
      value: "",
    });
    const e = [
      put("/n/election/leader/a", 2, 2),
      put("/n/election/leader/b", 3, 3),
      put("/n/groups/g/assignment", 4, 4, JSON.stringify({ leaderEpoch: 2 })),
      del("/n/election/leader/a", 5),
      put("/n/groups/g/assignment", 6, 4, JSON.stringify({ leaderEpoch: 3 })),
      put("/n/groups/g/assignment", 7, 4, JSON.stringify({ leaderEpoch: 2 })), // the deposed leader
    ];
    expect(staleLeaderWrites(e, "/n/election/leader/").map((x) => x.modRevision)).toEqual([7]);
  });
});

describe("handoff gap of a paused worker", () => {
  it("counts from its last sign of life, not from the fence it reports after resuming", () => {
    const e = (t: number, node: string, event: string, extra: Partial<WorkerEvent> = {}): WorkerEvent => ({
      t,
      node,
      event,
      ...extra,
    });
    const sh = { shard: 0, totalShards: 1, version: 1 };
    const events = [
      e(0, "a", "shard_started", sh),
      e(100, "a", "processed", { ...sh, id: "0" }),
      // paused at ~100; b takes over at 4100; a resumes at 5000 and fences
      e(4100, "b", "shard_started", { ...sh, version: 2 }),
      e(5000, "a", "fenced"),
    ];
    expect(maxHandoffGapMs(spans(events), ["0"])).toBe(4000);
  });
});

describe("overlap check compares items, not shard numbers", () => {
  const dataset = Array.from({ length: 30 }, (_, i) => String(i));

  it("sees an overlap across a modulo reshape (shard 0 of 2 and shard 1 of 3 share item 4)", () => {
    const events = [
      ev(0, "a", "shard_started", s(0, 2)),
      ev(10, "a", "processed", { ...s(0, 2), id: "0" }),
      ev(80, "a", "processed", { ...s(0, 2), id: "2" }),
      ev(50, "b", "shard_started", s(1, 3)),
      ev(60, "b", "processed", { ...s(1, 3), id: "1" }),
    ];
    const sp = spans(events);
    // Different shard keys: a check by (totalShards, shard) cannot see this one.
    expect(new Set(sp.map((x) => x.key)).size).toBe(2);
    const found = overlaps(sp, ["0", "1", "2", "3", "4", "5"]);
    expect(found).toHaveLength(1);
    expect(found[0]?.item).toBe("4");
    expect([found[0]?.a.node, found[0]?.b.node].sort()).toEqual(["a", "b"]);
  });

  it("finds none across a reshape when the two shards share no item of the dataset", () => {
    const events = [
      ev(0, "a", "shard_started", s(0, 2)),
      ev(10, "a", "processed", { ...s(0, 2), id: "0" }),
      ev(80, "a", "processed", { ...s(0, 2), id: "2" }),
      ev(50, "b", "shard_started", s(1, 3)),
      ev(60, "b", "processed", { ...s(1, 3), id: "1" }),
    ];
    // (2, 0) holds 0 and 2, (3, 1) holds 1: nothing in common.
    expect(overlaps(spans(events), ["0", "1", "2", "3"])).toEqual([]);
  });

  it("keeps two incarnations of one node id apart", () => {
    const inc = (incarnation: number) => ({ ...s(0, 1), incarnation });
    const events = [
      ev(0, "w", "shard_started", inc(1)),
      ev(10, "w", "processed", { ...inc(1), id: "0" }),
      ev(40, "w", "processed", { ...inc(1), id: "1" }),
      ev(20, "w", "shard_started", inc(2)),
      ev(30, "w", "processed", { ...inc(2), id: "2" }),
    ];
    const sp = spans(events);
    expect(sp.map((x) => x.incarnation).sort()).toEqual([1, 2]);
    expect(overlaps(sp, ["0", "1", "2"])).toHaveLength(1);
    // One process holding two stints at once (e.g. sticky shards) is not an overlap.
    const one = events.map((e) => ({ ...e, incarnation: 1 }));
    expect(overlaps(spans(one), ["0", "1", "2"])).toEqual([]);
  });

  it("flags intersecting windows exactly when some item lies in both shards (every T1, T2 <= 6)", () => {
    for (let t1 = 1; t1 <= 6; t1++)
      for (let t2 = 1; t2 <= 6; t2++)
        for (let s1 = 0; s1 < t1; s1++)
          for (let s2 = 0; s2 < t2; s2++) {
            const events = [
              ev(0, "a", "shard_started", s(s1, t1)),
              ev(10, "a", "processed", { ...s(s1, t1), id: "x" }),
              ev(5, "b", "shard_started", s(s2, t2)),
              ev(8, "b", "processed", { ...s(s2, t2), id: "y" }),
            ];
            const both = dataset.some((id) => Number(id) % t1 === s1 && Number(id) % t2 === s2);
            const found = overlaps(spans(events), dataset).length > 0;
            expect(found, `(${t1}/${s1}) vs (${t2}/${s2})`).toBe(both);
            // Without a reshape this is the shard-number check it replaces.
            if (t1 === t2) expect(found).toBe(s1 === s2);
            // Windows that do not intersect never overlap, whatever the shards.
            const later = events.map((e) => (e.node === "b" ? { ...e, t: e.t + 100 } : e));
            expect(overlaps(spans(later), dataset)).toEqual([]);
          }
  });
});
