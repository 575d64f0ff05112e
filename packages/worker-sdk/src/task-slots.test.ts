import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type HeldTask, planSlots, type ShardStanding } from "./task-slots.js";

const t = (id: string, shardId?: number, attempt = 1): HeldTask => ({
  id,
  attempt,
  shardId,
  shardVersion: 1,
});

describe("planSlots", () => {
  it("starts FIFO up to the free slots", () => {
    const p = planSlots([t("a"), t("b"), t("c")], 2, new Set(), () => "runs");
    expect(p.start.map((x) => x.id)).toEqual(["a", "b"]);
    expect(p.giveBack).toEqual([]);
  });

  it("counts busy attempts (aborted, not yet returned) against the slots", () => {
    const p = planSlots([t("a"), t("b")], 2, new Set(["x"]), () => "runs");
    expect(p.start.map((x) => x.id)).toEqual(["a"]);
  });

  it("holds a task whose previous attempt is still busy here", () => {
    const p = planSlots([t("a", undefined, 2), t("b")], 3, new Set(["a"]), () => "runs");
    expect(p.start.map((x) => x.id)).toEqual(["b"]);
  });

  it("starts nothing when capacity was lowered below what is busy", () => {
    const p = planSlots([t("a")], 1, new Set(["x", "y"]), () => "runs");
    expect(p.start).toEqual([]);
  });

  it("waits for a shard that does not run yet, gives back one that is lost", () => {
    const standing = ({ shardId: s }: HeldTask): ShardStanding =>
      s === 1 ? "runs" : s === 2 ? "wait" : "lost";
    const p = planSlots([t("a", 2), t("b", 3), t("c", 1)], 1, new Set(), standing);
    expect(p.start.map((x) => x.id)).toEqual(["c"]);
    expect(p.giveBack.map((x) => x.id)).toEqual(["b"]);
  });

  it("never exceeds the slots and never starts one id twice (property)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ id: fc.constantFrom("a", "b", "c", "d", "e"), shard: fc.integer({ min: 0, max: 3 }) }),
        ),
        fc.integer({ min: 0, max: 6 }),
        fc.uniqueArray(fc.constantFrom("a", "b", "x", "y")),
        (held, slots, busy) => {
          const standingOf = (s: number): ShardStanding =>
            (["runs", "wait", "lost", "runs"] as const)[s] ?? "runs";
          const busySet = new Set<string>(busy);
          const p = planSlots(
            held.map((h) => t(h.id, h.shard)),
            slots,
            busySet,
            (task) => standingOf(task.shardId ?? 0),
          );
          const ids = p.start.map((x) => x.id);
          if (busySet.size + ids.length > Math.max(slots, busySet.size)) return false;
          if (new Set(ids).size !== ids.length) return false;
          if (ids.some((id) => busySet.has(id))) return false;
          // A startable task is left only when the slots are full.
          const startable = held.filter((h) => standingOf(h.shard) === "runs" && !busySet.has(h.id));
          const distinct = new Set(startable.map((h) => h.id)).size;
          return ids.length === Math.min(distinct, Math.max(0, slots - busySet.size));
        },
      ),
    );
  });
});
