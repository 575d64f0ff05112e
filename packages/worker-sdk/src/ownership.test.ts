import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AssignmentView,
  Ownership,
  type OwnershipActions,
  type Phase,
  type StabilityWindow,
} from "./ownership.js";

function view(
  version: number,
  phase: Phase,
  shards: readonly number[],
  totalShards = 4,
  strategy = "range",
  leaderEpoch = 1,
): AssignmentView {
  return { leaderEpoch, version, phase, totalShards, shards, strategy };
}

const nothing: OwnershipActions = { stop: [], start: [], release: undefined };

function actions(a: Partial<OwnershipActions>): OwnershipActions {
  return { ...nothing, ...a };
}

/** An ownership confirmed and running `shards` of an active `version`. */
function runningOwnership(
  shards: readonly number[],
  version = 1,
  totalShards = 4,
  window?: StabilityWindow,
): Ownership {
  const o = new Ownership(window);
  o.confirm(0);
  const a = o.observe(view(version, "active", shards, totalShards), 0, true);
  expect(a.start).toEqual(shards);
  return o;
}

describe("Ownership scenarios", () => {
  describe("(a) initially fenced", () => {
    it("starts fenced, with nothing running or stopping", () => {
      const o = new Ownership();
      expect(o.fenced).toBe(true);
      expect(o.latest).toBeUndefined();
      expect(o.running).toEqual([]);
      expect(o.stopping).toEqual([]);
      expect(o.runningTotalShards).toBe(0);
      expect(o.reconcile(0)).toEqual(nothing);
    });

    it("starts nothing of an active version until confirm()", () => {
      const o = new Ownership();
      expect(o.observe(view(1, "active", [1, 2]), 0)).toEqual(nothing);
      expect(o.observe(view(1, "active", [1, 2]), 10, true)).toEqual(nothing);
      expect(o.reconcile(10_000)).toEqual(nothing);
      expect(o.running).toEqual([]);
      expect(o.runs(1, 4)).toBe(false);
      expect(o.confirm(10_001)).toEqual(actions({ start: [1, 2] }));
      expect(o.fenced).toBe(false);
      expect(o.running).toEqual([1, 2]);
    });

    it("confirm() without any view starts nothing", () => {
      const o = new Ownership();
      expect(o.confirm(0)).toEqual(nothing);
      expect(o.fenced).toBe(false);
    });
  });

  describe("(b) active version, confirmed", () => {
    it("starts its shards on confirm()", () => {
      const o = new Ownership();
      o.observe(view(1, "active", [0, 3]), 0);
      expect(o.confirm(1)).toEqual(actions({ start: [0, 3] }));
      expect(o.running).toEqual([0, 3]);
      expect(o.runningTotalShards).toBe(4);
      expect(o.runs(0, 4)).toBe(true);
      expect(o.runs(3, 4)).toBe(true);
      expect(o.runs(1, 4)).toBe(false);
      expect(o.runs(0, 2)).toBe(false); // another shard count: another shard
    });

    it("starts its shards on observe() once confirmed", () => {
      const o = new Ownership();
      o.confirm(0);
      expect(o.observe(view(1, "active", [2]), 0)).toEqual(actions({ start: [2] }));
    });

    it("starts each shard once: repeats of the same view start nothing", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(1, "active", [1, 2]), 5, true)).toEqual(nothing);
      expect(o.confirm(6)).toEqual(nothing);
      expect(o.reconcile(7)).toEqual(nothing);
      expect(o.running).toEqual([1, 2]);
    });

    it("a newer active version starts the gained shards and stops the lost ones at once", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "active", [2, 3]), 1)).toEqual(actions({ stop: [1], start: [3] }));
      expect(o.running).toEqual([2, 3]);
      expect(o.stopping).toEqual([1]);
    });

    it("phase none starts nothing and stops the shards it does not list", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "none", [1]), 1)).toEqual(actions({ stop: [2] }));
      expect(o.stopped(2, 2)).toEqual(nothing); // no release for phase none
      expect(o.observe(view(3, "none", [1, 3]), 3)).toEqual(nothing);
      expect(o.running).toEqual([1]);
    });
  });

  describe("(c) pending version", () => {
    it("stops a removed shard at once and releases exactly once after its stop completed", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "pending", [1]), 10)).toEqual(actions({ stop: [2] }));
      expect(o.running).toEqual([1]);
      expect(o.stopping).toEqual([2]);
      expect(o.runs(2, 4)).toBe(false);
      // No release while the stop is under way, however often we look.
      expect(o.reconcile(11)).toEqual(nothing);
      expect(o.observe(view(2, "pending", [1]), 12, true)).toEqual(nothing);
      expect(o.confirm(13)).toEqual(nothing);
      // The handler returned: release that version, once.
      expect(o.stopped(2, 14)).toEqual(actions({ release: 2 }));
      expect(o.stopping).toEqual([]);
      expect(o.reconcile(15)).toEqual(nothing);
      expect(o.observe(view(2, "pending", [1]), 16, true)).toEqual(nothing);
      expect(o.stopped(2, 17)).toEqual(nothing);
      expect(o.running).toEqual([1]);
    });

    it("waits for every removed shard before releasing", () => {
      const o = runningOwnership([0, 1, 2, 3]);
      expect(o.observe(view(2, "pending", [0]), 1)).toEqual(actions({ stop: [1, 2, 3] }));
      expect(o.stopped(3, 2)).toEqual(nothing);
      expect(o.stopped(1, 3)).toEqual(nothing);
      expect(o.stopped(2, 4)).toEqual(actions({ release: 2 }));
    });

    it("releases at once when it removes nothing", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "pending", [1, 2]), 1)).toEqual(actions({ release: 2 }));
      expect(o.observe(view(2, "pending", [1, 2]), 2)).toEqual(nothing);
      expect(o.running).toEqual([1, 2]);
    });

    it("never starts a gained shard until the same version turns active", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "pending", [1, 2, 3]), 1)).toEqual(actions({ release: 2 }));
      expect(o.reconcile(1_000_000)).toEqual(nothing);
      expect(o.confirm(1_000_001)).toEqual(nothing);
      expect(o.runs(3, 4)).toBe(false);
      expect(o.observe(view(2, "active", [1, 2, 3]), 1_000_002)).toEqual(actions({ start: [3] }));
    });

    it("a gained shard of a pending version is not started by an older active version", () => {
      const o = runningOwnership([1]);
      expect(o.observe(view(2, "pending", [0, 1]), 1)).toEqual(actions({ release: 2 }));
      // The stale active version 1 must not bring shard 0 (or anything) in.
      expect(o.observe(view(1, "active", [0, 1]), 2)).toEqual(nothing);
      expect(o.running).toEqual([1]);
      // A newer pending version supersedes it: still nothing starts; it is released too.
      expect(o.observe(view(3, "pending", [0, 1]), 3)).toEqual(actions({ release: 3 }));
      expect(o.observe(view(3, "active", [0, 1]), 4)).toEqual(actions({ start: [0] }));
    });

    it("a pending version while fenced stops everything and releases once all stopped", () => {
      const o = runningOwnership([1, 2]);
      expect(o.fence(1)).toEqual(actions({ stop: [1, 2] }));
      expect(o.observe(view(2, "pending", [1, 2]), 2)).toEqual(nothing);
      expect(o.stopped(1, 3)).toEqual(nothing);
      expect(o.stopped(2, 4)).toEqual(actions({ release: 2 }));
    });

    it("newSession() lets a pending version be released again (the old Release may be lost)", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "pending", [1]), 1)).toEqual(actions({ stop: [2] }));
      expect(o.stopped(2, 2)).toEqual(actions({ release: 2 }));
      o.newSession();
      expect(o.reconcile(3)).toEqual(actions({ release: 2 }));
      expect(o.reconcile(4)).toEqual(nothing);
    });

    it("newSession() does not release before the stops completed", () => {
      const o = runningOwnership([1, 2]);
      o.observe(view(2, "pending", [1]), 1);
      o.newSession();
      expect(o.reconcile(2)).toEqual(nothing);
      expect(o.stopped(2, 3)).toEqual(actions({ release: 2 }));
    });
  });

  describe("(d) shard count or strategy change", () => {
    it("a new totalShards stops every running shard and starts nothing until all stops completed", () => {
      const o = runningOwnership([0, 1], 1, 4);
      // Same ids, but of 2 shards: they mean other tasks.
      expect(o.observe(view(2, "active", [0, 1], 2), 1)).toEqual(actions({ stop: [0, 1] }));
      expect(o.running).toEqual([]);
      expect(o.stopping).toEqual([0, 1]);
      expect(o.runningTotalShards).toBe(0);
      expect(o.runs(0, 4)).toBe(false);
      expect(o.runs(0, 2)).toBe(false);
      expect(o.stopped(0, 2)).toEqual(nothing); // shard 1 (of 4) is still stopping
      expect(o.reconcile(3)).toEqual(nothing);
      expect(o.stopped(1, 4)).toEqual(actions({ start: [0, 1] }));
      expect(o.runningTotalShards).toBe(2);
      expect(o.runs(0, 2)).toBe(true);
      expect(o.runs(0, 4)).toBe(false);
    });

    it("no shard of the new count starts, even one whose id never ran, until the old ones stopped", () => {
      const o = runningOwnership([0], 1, 4);
      expect(o.observe(view(2, "active", [1, 2], 3), 1)).toEqual(actions({ stop: [0] }));
      expect(o.reconcile(2)).toEqual(nothing);
      expect(o.stopped(0, 3)).toEqual(actions({ start: [1, 2] }));
    });

    it("a strategy change stops everything as well", () => {
      const o = runningOwnership([0, 1], 1, 4);
      expect(o.observe(view(2, "active", [0, 1], 4, "hash"), 1)).toEqual(actions({ stop: [0, 1] }));
      expect(o.stopped(1, 2)).toEqual(nothing);
      expect(o.stopped(0, 3)).toEqual(actions({ start: [0, 1] }));
    });

    it("a pending reshape stops everything and releases after all stops", () => {
      const o = runningOwnership([0, 1, 2], 1, 4);
      expect(o.observe(view(2, "pending", [0], 8), 1)).toEqual(actions({ stop: [0, 1, 2] }));
      expect(o.stopped(0, 2)).toEqual(nothing);
      expect(o.stopped(1, 3)).toEqual(nothing);
      expect(o.stopped(2, 4)).toEqual(actions({ release: 2 }));
      expect(o.observe(view(2, "active", [0], 8), 5)).toEqual(actions({ start: [0] }));
      expect(o.runningTotalShards).toBe(8);
    });

    it("shards removed earlier under the old count also block the new count", () => {
      const o = runningOwnership([0, 1], 1, 4);
      expect(o.observe(view(2, "active", [0], 4), 1)).toEqual(actions({ stop: [1] }));
      expect(o.observe(view(3, "active", [0, 1], 2), 2)).toEqual(actions({ stop: [0] }));
      expect(o.stopped(0, 3)).toEqual(nothing); // 1 (of 4) still stopping
      expect(o.stopped(1, 4)).toEqual(actions({ start: [0, 1] }));
    });
  });

  describe("(e) fence and confirm", () => {
    it("fence() stops all; confirm() restarts the still-owned shards once their stops completed", () => {
      const o = runningOwnership([1, 2, 3]);
      expect(o.fence(1)).toEqual(actions({ stop: [1, 2, 3] }));
      expect(o.fenced).toBe(true);
      expect(o.running).toEqual([]);
      expect(o.runs(1, 4)).toBe(false);
      expect(o.fence(2)).toEqual(nothing);
      // While fenced, nothing starts even after the stops complete.
      expect(o.stopped(1, 3)).toEqual(nothing);
      expect(o.stopped(2, 4)).toEqual(nothing);
      expect(o.stopped(3, 5)).toEqual(nothing);
      // Meanwhile shard 3 was taken away.
      expect(o.observe(view(2, "active", [1, 2]), 6)).toEqual(nothing);
      expect(o.confirm(7)).toEqual(actions({ start: [1, 2] }));
      expect(o.running).toEqual([1, 2]);
    });

    it("confirm() before the stops completed starts them as the stops complete", () => {
      const o = runningOwnership([1, 2]);
      o.fence(1);
      expect(o.confirm(2)).toEqual(nothing);
      expect(o.fenced).toBe(false);
      expect(o.stopped(2, 3)).toEqual(nothing);
      expect(o.stopped(1, 4)).toEqual(actions({ start: [1, 2] }));
    });

    it("confirm() does not restart the shards of a pending version", () => {
      const o = runningOwnership([1, 2]);
      o.fence(1);
      o.stopped(1, 2);
      o.stopped(2, 3);
      expect(o.observe(view(2, "pending", [1, 2]), 4)).toEqual(actions({ release: 2 }));
      expect(o.confirm(5)).toEqual(nothing);
      expect(o.observe(view(2, "active", [1, 2]), 6)).toEqual(actions({ start: [1, 2] }));
    });

    it("a shard removed while fenced is not restarted", () => {
      const o = runningOwnership([1, 2]);
      o.fence(1);
      o.observe(view(2, "active", [2]), 2);
      o.stopped(1, 3);
      o.stopped(2, 4);
      expect(o.confirm(5)).toEqual(actions({ start: [2] }));
    });
  });

  describe("(f) stale versions", () => {
    it("ignores a lower version entirely", () => {
      const o = runningOwnership([1, 2], 5);
      expect(o.observe(view(4, "active", [3]), 1)).toEqual(nothing);
      expect(o.observe(view(4, "pending", []), 2, true)).toEqual(nothing);
      expect(o.observe(view(1, "active", [0], 2, "hash"), 3)).toEqual(nothing);
      expect(o.latest?.version).toBe(5);
      expect(o.latest?.shards).toEqual([1, 2]);
      expect(o.running).toEqual([1, 2]);
      expect(o.stopping).toEqual([]);
    });

    it("a stale view neither resets nor advances the stability window", () => {
      const o = new Ownership({ heartbeats: 2, ms: 0 });
      o.confirm(0);
      expect(o.observe(view(3, "active", [1]), 0, true)).toEqual(nothing);
      expect(o.observe(view(2, "active", [1]), 1, true)).toEqual(nothing); // stale: not counted
      expect(o.observe(view(3, "active", [1]), 2, true)).toEqual(actions({ start: [1] }));
    });
  });

  describe("(g) stability window", () => {
    it("{heartbeats: 3}: starts only after 3 acks of the same active version", () => {
      const o = new Ownership({ heartbeats: 3, ms: 0 });
      o.confirm(0);
      expect(o.observe(view(1, "active", [1, 2]), 0, true)).toEqual(nothing);
      expect(o.observe(view(1, "active", [1, 2]), 1_000_000)).toEqual(nothing); // not an ack
      expect(o.reconcile(2_000_000)).toEqual(nothing); // time alone does not count
      expect(o.observe(view(1, "active", [1, 2]), 2_000_001, true)).toEqual(nothing);
      expect(o.observe(view(1, "active", [1, 2]), 2_000_002, true)).toEqual(actions({ start: [1, 2] }));
    });

    it("{heartbeats: 3}: a new version or phase restarts the count", () => {
      const o = new Ownership({ heartbeats: 3, ms: 0 });
      o.confirm(0);
      o.observe(view(1, "active", [1]), 0, true);
      o.observe(view(1, "active", [1]), 1, true);
      expect(o.observe(view(2, "active", [1]), 2, true)).toEqual(nothing); // count 1 of version 2
      expect(o.observe(view(2, "active", [1]), 3, true)).toEqual(nothing);
      expect(o.observe(view(3, "pending", [1]), 4, true)).toEqual(actions({ release: 3 }));
      expect(o.observe(view(3, "pending", [1]), 5, true)).toEqual(nothing); // pending acks do not count
      expect(o.observe(view(3, "active", [1]), 6, true)).toEqual(nothing);
      expect(o.observe(view(3, "active", [1]), 7, true)).toEqual(nothing);
      expect(o.observe(view(3, "active", [1]), 8, true)).toEqual(actions({ start: [1] }));
    });

    it("{ms: 500}: starts only once 500 ms passed since the version was first seen active", () => {
      const o = new Ownership({ heartbeats: 0, ms: 500 });
      o.confirm(0);
      expect(o.observe(view(1, "active", [1, 2]), 1000, true)).toEqual(nothing);
      expect(o.observe(view(1, "active", [1, 2]), 1200, true)).toEqual(nothing); // same version: clock keeps running
      expect(o.reconcile(1499)).toEqual(nothing);
      expect(o.reconcile(1500)).toEqual(actions({ start: [1, 2] }));
    });

    it("{ms: 500}: the clock starts when the version turns active, not when it was pending", () => {
      const o = new Ownership({ heartbeats: 0, ms: 500 });
      o.confirm(0);
      expect(o.observe(view(1, "pending", [1]), 0)).toEqual(actions({ release: 1 }));
      expect(o.observe(view(1, "active", [1]), 400)).toEqual(nothing);
      expect(o.reconcile(899)).toEqual(nothing);
      expect(o.reconcile(900)).toEqual(actions({ start: [1] }));
    });

    it("{ms: 500}: a newer active version restarts the clock for its gained shards", () => {
      const o = new Ownership({ heartbeats: 0, ms: 500 });
      o.confirm(0);
      o.observe(view(1, "active", [1]), 0);
      expect(o.reconcile(500)).toEqual(actions({ start: [1] }));
      // Version 2 drops nothing, gains 2: shard 1 keeps running, 2 waits for the window.
      expect(o.observe(view(2, "active", [1, 2]), 600)).toEqual(nothing);
      expect(o.running).toEqual([1]);
      expect(o.reconcile(1099)).toEqual(nothing);
      expect(o.reconcile(1100)).toEqual(actions({ start: [2] }));
    });

    it("the window never delays a stop", () => {
      const o = new Ownership({ heartbeats: 5, ms: 10_000 });
      o.confirm(0);
      for (let i = 0; i < 5; i++) o.observe(view(1, "active", [1, 2]), i, true);
      expect(o.running).toEqual([1, 2]);
      expect(o.observe(view(2, "active", [1]), 10)).toEqual(actions({ stop: [2] }));
      expect(o.fence(11)).toEqual(actions({ stop: [1] }));
    });

    it("either bound suffices", () => {
      const byAcks = new Ownership({ heartbeats: 2, ms: 500 });
      byAcks.confirm(0);
      byAcks.observe(view(1, "active", [1]), 0, true);
      expect(byAcks.observe(view(1, "active", [1]), 10, true)).toEqual(actions({ start: [1] }));

      const byTime = new Ownership({ heartbeats: 2, ms: 500 });
      byTime.confirm(0);
      byTime.observe(view(1, "active", [1]), 0, true);
      expect(byTime.reconcile(499)).toEqual(nothing);
      expect(byTime.reconcile(500)).toEqual(actions({ start: [1] }));
    });

    it("the window, once met, also lets confirm() restart shards after a fence", () => {
      const o = new Ownership({ heartbeats: 0, ms: 500 });
      o.confirm(0);
      o.observe(view(1, "active", [1]), 0);
      expect(o.reconcile(500)).toEqual(actions({ start: [1] }));
      o.fence(600);
      o.stopped(1, 601);
      expect(o.confirm(602)).toEqual(actions({ start: [1] }));
    });
  });

  describe("(h) re-granted while stopping", () => {
    it("is not started again until its stop completed", () => {
      const o = runningOwnership([1, 2]);
      expect(o.observe(view(2, "active", [1]), 1)).toEqual(actions({ stop: [2] }));
      expect(o.observe(view(3, "active", [1, 2]), 2)).toEqual(nothing);
      expect(o.runs(2, 4)).toBe(false);
      expect(o.reconcile(3)).toEqual(nothing);
      expect(o.confirm(4)).toEqual(nothing);
      expect(o.stopped(2, 5)).toEqual(actions({ start: [2] }));
      expect(o.runs(2, 4)).toBe(true);
    });

    it("after a fence, the re-granted shard waits for its own stop", () => {
      const o = runningOwnership([1]);
      o.fence(1);
      o.confirm(2);
      expect(o.observe(view(2, "active", [1]), 3)).toEqual(nothing);
      expect(o.stopped(1, 4)).toEqual(actions({ start: [1] }));
    });
  });
});

describe("Ownership: leader epochs and incarnations", () => {
  describe("(i) leader epochs", () => {
    it("ignores any view of a lower epoch, whatever its version", () => {
      const o = runningOwnership([1], 3); // epoch 1
      expect(o.observe(view(1, "active", [1, 2], 4, "range", 0), 1)).toEqual(nothing);
      expect(o.observe(view(9, "active", [0], 4, "range", 0), 2)).toEqual(nothing);
      expect(o.latest?.version).toBe(3);
      expect(o.running).toEqual([1]);
    });

    it("a higher epoch with a lower version is the new truth: lost shards stop, the pending version is released", () => {
      const o = runningOwnership([1, 2], 5);
      expect(o.observe(view(1, "pending", [2, 3], 4, "range", 2), 1)).toEqual(actions({ stop: [1] }));
      expect(o.latest).toMatchObject({ leaderEpoch: 2, version: 1 });
      expect(o.stopped(1, 2)).toEqual(actions({ release: 1 }));
      // Only once active do the gained shards start; the kept one never stopped.
      expect(o.observe(view(1, "active", [2, 3], 4, "range", 2), 3)).toEqual(actions({ start: [3] }));
      expect(o.running).toEqual([2, 3]);
      // The old epoch's versions are over, even higher ones.
      expect(o.observe(view(6, "active", [0], 4, "range", 1), 4)).toEqual(nothing);
    });

    it("a version number released in one epoch is released again when a new epoch reuses it", () => {
      const o = runningOwnership([1], 1);
      expect(o.observe(view(2, "pending", [1]), 1)).toEqual(actions({ release: 2 }));
      expect(o.observe(view(2, "pending", [1], 4, "range", 2), 2)).toEqual(actions({ release: 2 }));
    });
  });

  describe("(j) new incarnation", () => {
    it("stops everything running and forgets the view; nothing starts before the new session is confirmed", () => {
      const o = runningOwnership([0, 2], 4);
      expect(o.newIncarnation(10)).toEqual(actions({ stop: [0, 2] }));
      expect(o.latest).toBeUndefined();
      expect(o.fenced).toBe(true);
      expect(o.runs(0, 4)).toBe(false);
      // The Welcome's view (same version, still active), then the confirmation.
      expect(o.observe(view(4, "active", [0, 2]), 11)).toEqual(nothing);
      expect(o.confirm(12)).toEqual(nothing); // the stops have not completed
      expect(o.stopped(0, 13)).toEqual(nothing);
      expect(o.stopped(2, 14)).toEqual(actions({ start: [0, 2] }));
    });

    it("with a pending view it starts nothing, and releases once the stops completed", () => {
      const o = runningOwnership([1], 4);
      expect(o.newIncarnation(10)).toEqual(actions({ stop: [1] }));
      expect(o.observe(view(4, "pending", [1]), 11)).toEqual(nothing);
      expect(o.confirm(12)).toEqual(nothing);
      expect(o.stopped(1, 13)).toEqual(actions({ release: 4 }));
      expect(o.running).toEqual([]);
      expect(o.observe(view(4, "active", [1]), 14)).toEqual(actions({ start: [1] }));
    });

    it("with nothing running it only forgets the view", () => {
      const o = new Ownership();
      o.observe(view(2, "active", [1]), 0);
      expect(o.newIncarnation(1)).toEqual(nothing);
      expect(o.latest).toBeUndefined();
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random event sequences against a model of the handlers actually running.

type Event =
  | {
      readonly kind: "observe";
      readonly dt: number;
      /** Relative to the latest version: -1 is stale, 0 the same, >0 newer. */
      readonly versionDelta: number;
      /** Relative to the latest epoch: -1 is a deposed leader, +1 a new one (any version then). */
      readonly epochDelta: number;
      readonly phase: Phase;
      readonly totalShards: number;
      /** Bit i set: shard i (kept only when i < totalShards). */
      readonly mask: number;
      readonly strategy: string;
      readonly ack: boolean;
    }
  | { readonly kind: "fence"; readonly dt: number }
  | { readonly kind: "confirm"; readonly dt: number }
  | { readonly kind: "stopped"; readonly dt: number; readonly pick: number }
  | { readonly kind: "reconcile"; readonly dt: number }
  | { readonly kind: "newSession" }
  | { readonly kind: "newIncarnation"; readonly dt: number };

const dt = fc.integer({ min: 0, max: 300 });

const eventArb: fc.Arbitrary<Event> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("observe" as const),
      dt,
      versionDelta: fc.constantFrom(-1, 0, 0, 0, 1, 1, 2),
      epochDelta: fc.constantFrom(-1, 0, 0, 0, 0, 0, 1),
      phase: fc.constantFrom<Phase>("active", "active", "pending", "pending", "none"),
      // Mostly the same count (so versions hand shards back and forth), sometimes another one.
      totalShards: fc.constantFrom(4, 4, 4, 4, 4, 1, 2, 3),
      mask: fc.integer({ min: 0, max: 15 }),
      strategy: fc.constantFrom("range", "range", "range", "hash"),
      ack: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("fence" as const), dt }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("confirm" as const), dt }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("stopped" as const), dt, pick: fc.nat({ max: 7 }) }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("reconcile" as const), dt }) },
  { weight: 1, arbitrary: fc.constant({ kind: "newSession" as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("newIncarnation" as const), dt }) },
);

const windowArb: fc.Arbitrary<StabilityWindow> = fc.oneof(
  fc.constant({ heartbeats: 0, ms: 0 }),
  fc.record({ heartbeats: fc.integer({ min: 0, max: 3 }), ms: fc.constantFrom(0, 200, 500) }),
);

interface Shape {
  readonly totalShards: number;
  readonly strategy: string;
}

function sameShape(a: Shape, b: Shape): boolean {
  return a.totalShards === b.totalShards && a.strategy === b.strategy;
}

/** What the caller sees: handlers running or stopping, and what was released. */
class World {
  readonly running = new Map<number, Shape>();
  readonly stopping = new Map<number, Shape>();
  /** `epoch:version` released since the last newSession(). */
  readonly released = new Set<string>();
  latest: AssignmentView | undefined;
  fenced = true;
  // The stability window as documented: acks / first time seen active, per (version, phase).
  activeSince: number | undefined;
  activeAcks = 0;

  constructor(readonly window: StabilityWindow) {}

  stable(now: number): boolean {
    const w = this.window;
    if (w.heartbeats <= 0 && w.ms <= 0) return true;
    if (w.heartbeats > 0 && this.activeAcks >= w.heartbeats) return true;
    return w.ms > 0 && this.activeSince !== undefined && now - this.activeSince >= w.ms;
  }

  /** Carries out `a` (computed at `now`) as the worker would, checking I1-I3 on the way. */
  apply(a: OwnershipActions, now: number): void {
    const v = this.latest;
    // Stops: only of running handlers, each once.
    expect(new Set(a.stop).size).toBe(a.stop.length);
    for (const s of a.stop) {
      const shape = this.running.get(s);
      expect(shape, `stop of shard ${s}, which is not running`).toBeDefined();
      if (shape === undefined) continue;
      this.running.delete(s);
      this.stopping.set(s, shape);
    }
    // (I3) release: latest is that version, pending, nothing stopping; once per version.
    if (a.release !== undefined) {
      expect(v?.version).toBe(a.release);
      expect(v?.phase).toBe("pending");
      expect(this.stopping.size).toBe(0);
      const key = `${v?.leaderEpoch}:${a.release}`;
      expect(this.released.has(key), `second release of version ${key}`).toBe(false);
      this.released.add(key);
    }
    expect(new Set(a.start).size).toBe(a.start.length);
    for (const s of a.start) {
      // (I1) a started shard belongs to the latest view, which is active, and we are not fenced.
      expect(v).toBeDefined();
      if (v === undefined) return;
      expect(v.phase).toBe("active");
      expect(v.shards).toContain(s);
      expect(this.fenced).toBe(false);
      // ... and only once the stability window has passed.
      expect(this.stable(now), `start of shard ${s} before the window passed`).toBe(true);
      // (I2) never while a handler for that id still runs or is stopping.
      expect(this.running.has(s), `start of running shard ${s}`).toBe(false);
      expect(this.stopping.has(s), `start of stopping shard ${s}`).toBe(false);
      // Nothing of another shape (other shard ids' meaning) is still running or stopping.
      for (const shape of [...this.running.values(), ...this.stopping.values()]) {
        expect(sameShape(shape, v)).toBe(true);
      }
      this.running.set(s, { totalShards: v.totalShards, strategy: v.strategy });
    }
  }
}

function sorted(xs: Iterable<number>): number[] {
  return [...xs].sort((a, b) => a - b);
}

function shardsOf(mask: number, totalShards: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < totalShards; i++) if (mask & (1 << i)) out.push(i);
  return out;
}

function runScenario(window: StabilityWindow, events: readonly Event[]): void {
  const o = new Ownership(window);
  const w = new World(window);
  let now = 0;
  for (const e of events) {
    if (e.kind !== "newSession") now += e.dt;
    const epochOf = (v: AssignmentView | undefined) => v?.leaderEpoch ?? 1;
    let reconciled = true;
    switch (e.kind) {
      case "observe": {
        const prev = w.latest;
        const epoch = Math.max(1, epochOf(prev) + e.epochDelta);
        // A new epoch may carry any version, lower ones included (a new leader that lost the state).
        const base = epoch > epochOf(prev) ? 1 : (prev?.version ?? 1);
        const version = Math.max(1, base + e.versionDelta);
        const v = view(version, e.phase, shardsOf(e.mask, e.totalShards), e.totalShards, e.strategy, epoch);
        const stale =
          prev !== undefined &&
          (epoch < prev.leaderEpoch || (epoch === prev.leaderEpoch && version < prev.version));
        expect(prev !== undefined && Ownership.older(v, prev)).toBe(stale);
        const a = o.observe(v, now, e.ack);
        if (stale) {
          expect(a).toEqual(nothing);
          reconciled = false;
          break;
        }
        if (prev === undefined || prev.version !== v.version || prev.phase !== v.phase) {
          w.activeSince = v.phase === "active" ? now : undefined;
          w.activeAcks = 0;
        }
        if (e.ack && v.phase === "active") w.activeAcks += 1;
        w.latest = v;
        w.apply(a, now);
        break;
      }
      case "fence":
        w.fenced = true;
        w.apply(o.fence(now), now);
        // (I4) after fence(), nothing runs.
        expect(w.running.size).toBe(0);
        expect(o.running).toEqual([]);
        break;
      case "confirm":
        w.fenced = false;
        w.apply(o.confirm(now), now);
        break;
      case "stopped": {
        const stopping = sorted(w.stopping.keys());
        if (stopping.length === 0) {
          reconciled = false;
          break;
        }
        const s = stopping[e.pick % stopping.length] ?? -1;
        w.stopping.delete(s);
        w.apply(o.stopped(s, now), now);
        break;
      }
      case "reconcile":
        w.apply(o.reconcile(now), now);
        break;
      case "newSession":
        o.newSession();
        w.released.clear();
        reconciled = false;
        break;
      case "newIncarnation":
        // Starts from nothing: every running shard stops, the view is forgotten, fenced until confirmed.
        w.fenced = true;
        w.latest = undefined;
        w.activeSince = undefined;
        w.activeAcks = 0;
        w.released.clear();
        w.apply(o.newIncarnation(now), now);
        expect(w.running.size).toBe(0);
        break;
    }

    // The state machine agrees with the world.
    expect(o.fenced).toBe(w.fenced);
    expect(o.latest).toEqual(w.latest);
    expect(o.running).toEqual(sorted(w.running.keys()));
    expect(o.stopping).toEqual(sorted(w.stopping.keys()));
    if (w.fenced) expect(w.running.size).toBe(0);

    // Every running handler is owned in the latest version, in its shape.
    const v = w.latest;
    for (const [s, shape] of w.running) {
      expect(v).toBeDefined();
      if (v === undefined) break;
      expect(v.shards).toContain(s);
      expect(sameShape(shape, v)).toBe(true);
      expect(o.runningTotalShards).toBe(v.totalShards);
    }
    if (w.running.size === 0) expect(o.runningTotalShards).toBe(0);

    // (I5) runs(s, total) implies not fenced and s running (in that shard count), and conversely.
    const runs: string[] = [];
    const expectedRuns: string[] = [];
    for (let total = 1; total <= 4; total++) {
      for (let s = 0; s < 5; s++) {
        if (o.runs(s, total)) runs.push(`${s}/${total}`);
        if (!w.fenced && w.running.get(s)?.totalShards === total) expectedRuns.push(`${s}/${total}`);
      }
    }
    expect(runs).toEqual(expectedRuns);

    if (!reconciled || v === undefined) continue;
    // Liveness after each reconciliation: a pending version whose stops all completed is released ...
    if (v.phase === "pending" && w.stopping.size === 0)
      expect(w.released.has(`${v.leaderEpoch}:${v.version}`)).toBe(true);
    // ... and every owned shard of a stable active version runs, unless a stop blocks it.
    if (v.phase === "active" && !w.fenced && w.stable(now) && (w.stopping.size === 0 || w.running.size > 0)) {
      for (const s of v.shards) {
        if (!w.stopping.has(s))
          expect(w.running.has(s), `shard ${s} of v${v.version} not started`).toBe(true);
      }
    }
  }

  // Draining: once every stop completed and we are confirmed, a stable active version runs in full.
  while (w.stopping.size > 0) {
    const s = sorted(w.stopping.keys())[0] ?? -1;
    w.stopping.delete(s);
    w.apply(o.stopped(s, now), now);
  }
  w.fenced = false;
  w.apply(o.confirm(now), now);
  const v = w.latest;
  if (v !== undefined && v.phase === "active" && w.stable(now)) {
    expect(sorted(w.running.keys())).toEqual([...v.shards]);
  }
  if (v !== undefined && v.phase === "pending")
    expect(w.released.has(`${v.leaderEpoch}:${v.version}`)).toBe(true);
}

describe("Ownership (property)", () => {
  it("keeps the handoff invariants for any sequence of events", () => {
    fc.assert(
      fc.property(windowArb, fc.array(eventArb, { maxLength: 80 }), (window, events) => {
        runScenario(window, events);
      }),
      { numRuns: 500 },
    );
  });

  it("keeps them without a stability window, with long histories", () => {
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 50, maxLength: 250 }), (events) => {
        runScenario({ heartbeats: 0, ms: 0 }, events);
      }),
      { numRuns: 200 },
    );
  });
});
