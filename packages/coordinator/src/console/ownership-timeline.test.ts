import { describe, expect, it } from "vitest";
import { OwnershipTimeline } from "./ownership-timeline.js";

describe("OwnershipTimeline", () => {
  it("extends a segment while the owner stays, opens a gap and a new one on a handoff", () => {
    const t = new OwnershipTimeline(60_000);
    t.record("g", ["a", "b"], 1000);
    t.record("g", ["a", "b"], 2000);
    t.record("g", ["a", null], 3000);
    const tl = t.record("g", ["a", "a"], 4000);
    expect(tl[0]).toEqual([{ owner: "a", from: 1000, to: 4000 }]);
    expect(tl[1]).toEqual([
      { owner: "b", from: 1000, to: 2000 },
      { owner: null, from: 2000, to: 3000 },
      { owner: "a", from: 3000, to: 4000 },
    ]);
  });

  it("forgets what is older than the window and keeps removed shards until they age out", () => {
    const t = new OwnershipTimeline(10_000);
    t.record("g", ["a", "b"], 0);
    t.record("g", ["c", "b"], 5000);
    let tl = t.record("g", ["c"], 12_000);
    expect(tl[0]).toEqual([{ owner: "c", from: 0, to: 12_000 }]);
    expect(tl[1]).toEqual([{ owner: "b", from: 0, to: 5000 }]);
    tl = t.record("g", ["c"], 20_000);
    expect(tl).toHaveLength(1);
  });

  it("adopts a timeline relayed from the leader and continues it", () => {
    const t = new OwnershipTimeline(60_000);
    t.adopt("g", [[{ owner: "a", from: 0, to: 1000 }]], 1000);
    expect(t.record("g", ["a"], 2000)).toEqual([[{ owner: "a", from: 0, to: 2000 }]]);
  });

  it("keeps its own history before a new leader's shorter timeline, joined across the failover when the owner stayed", () => {
    const t = new OwnershipTimeline(60_000);
    t.adopt("g", [[{ owner: "a", from: 0, to: 10_000 }], [{ owner: "c", from: 0, to: 10_000 }]], 10_000);
    // The new leader knows only the seconds since its election (from 12 s).
    const merged = t.adopt(
      "g",
      [[{ owner: "a", from: 12_000, to: 14_000 }], [{ owner: "b", from: 12_000, to: 14_000 }]],
      14_000,
    );
    // Shard 0 stayed with a: one segment. Shard 1 changed hands: 10-12 s stays unrecorded.
    expect(merged).toEqual([
      [{ owner: "a", from: 0, to: 14_000 }],
      [
        { owner: "c", from: 0, to: 10_000 },
        { owner: "b", from: 12_000, to: 14_000 },
      ],
    ]);
    // The next relayed view (the leader's timeline grew) is merged the same way.
    expect(
      t.adopt(
        "g",
        [[{ owner: "a", from: 12_000, to: 15_000 }], [{ owner: "b", from: 12_000, to: 15_000 }]],
        15_000,
      )[0],
    ).toEqual([{ owner: "a", from: 0, to: 15_000 }]);
  });
});
