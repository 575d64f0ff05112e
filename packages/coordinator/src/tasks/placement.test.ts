import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type PlacementDecision,
  type PlacementLane,
  type PlacementTask,
  type PlacementWorker,
  placeTasks,
  type ShardOwnership,
} from "./placement.js";

const NUM_RUNS = 500;

// ---- generators ---------------------------------------------------------------------------

const labelsArb = fc.record(
  { zone: fc.constantFrom("a", "b"), gpu: fc.constant("yes") },
  { requiredKeys: [] },
) as fc.Arbitrary<Record<string, string>>;

const selectorArb = fc.constantFrom<Record<string, string>>(
  {},
  { zone: "a" },
  { zone: "b" },
  { gpu: "yes" },
  {
    zone: "a",
    gpu: "yes",
  },
);

const workersArb = fc
  .array(
    fc.record({
      labels: labelsArb,
      slots: fc.integer({ min: 0, max: 4 }),
      running: fc.integer({ min: 0, max: 5 }),
      cpuPercent: fc.constantFrom(0, 10, 50),
      eventLoopDelayMs: fc.constantFrom(1, 5),
      memoryRssBytes: fc.constantFrom(1e8, 2e8),
      queueLength: fc.constantFrom(0, 1),
      accepting: fc.oneof(
        { weight: 4, arbitrary: fc.constant(true) },
        { weight: 1, arbitrary: fc.constant(false) },
      ),
    }),
    { maxLength: 6 },
  )
  .map((ws) => ws.map((w, i): PlacementWorker => ({ ...w, nodeId: `w${i}` })));

interface Scenario {
  readonly workers: readonly PlacementWorker[];
  readonly shards: ShardOwnership;
  /** Lane specs; tasks go into lanes by index. */
  readonly laneSpecs: readonly (
    | { kind: "balanced"; selector: Record<string, string> }
    | { kind: "shard"; shard: number }
  )[];
  readonly tasks: readonly (PlacementTask & { lane: number })[];
}

const scenarioArb: fc.Arbitrary<Scenario> = workersArb.chain((workers) =>
  fc
    .record({
      totalShards: fc.integer({ min: 0, max: 4 }),
      ownerPicks: fc.array(fc.integer({ min: -1, max: 6 }), { minLength: 4, maxLength: 4 }),
      moving: fc.subarray([0, 1, 2, 3]),
      laneSpecs: fc.array(
        fc.oneof(
          selectorArb.map((selector) => ({ kind: "balanced" as const, selector })),
          fc.integer({ min: 0, max: 4 }).map((shard) => ({ kind: "shard" as const, shard })),
        ),
        { minLength: 1, maxLength: 5 },
      ),
      taskSpecs: fc.array(fc.record({ priority: fc.integer({ min: 1, max: 5 }), lane: fc.nat() }), {
        maxLength: 30,
      }),
    })
    .map(({ totalShards, ownerPicks, moving, laneSpecs, taskSpecs }) => {
      const owners = new Map<number, string>();
      for (let s = 0; s < totalShards; s++) {
        const pick = ownerPicks[s] ?? -1;
        // -1: unowned; an index past the workers: an owner that is not connected.
        if (pick >= 0) owners.set(s, `w${pick}`);
      }
      return {
        workers,
        shards: { totalShards, owners, moving: new Set(moving) },
        laneSpecs,
        tasks: taskSpecs.map((t, i) => ({
          id: `t${i}`,
          priority: t.priority,
          seq: i,
          lane: t.lane % laneSpecs.length,
        })),
      };
    }),
);

function lanesOf(s: Scenario): PlacementLane[] {
  return s.laneSpecs.map((spec, i) => {
    const tasks = s.tasks
      .filter((t) => t.lane === i)
      .sort((a, b) => a.priority - b.priority || a.seq - b.seq);
    return spec.kind === "balanced"
      ? { kind: "balanced", selector: spec.selector, tasks }
      : { kind: "shard", shard: spec.shard, tasks };
  });
}

// ---- an independent reference: every task in global order, every worker scanned ----------

function eligible(s: Scenario, t: Scenario["tasks"][number], w: PlacementWorker): boolean {
  if (!w.accepting) return false;
  const spec = s.laneSpecs[t.lane];
  if (spec === undefined) return false;
  if (spec.kind === "balanced") return Object.entries(spec.selector).every(([k, v]) => w.labels[k] === v);
  return (
    spec.shard < s.shards.totalShards &&
    !s.shards.moving.has(spec.shard) &&
    s.shards.owners.get(spec.shard) === w.nodeId
  );
}

function reference(s: Scenario): PlacementDecision[] {
  const used = new Map(s.workers.map((w) => [w.nodeId, 0]));
  const out: PlacementDecision[] = [];
  const order = [...s.tasks].sort((a, b) => a.priority - b.priority || a.seq - b.seq);
  for (const t of order) {
    const free = s.workers.filter(
      (w) => eligible(s, t, w) && w.running + (used.get(w.nodeId) ?? 0) < w.slots,
    );
    if (free.length === 0) continue;
    const util = (w: PlacementWorker) => (w.running + (used.get(w.nodeId) ?? 0)) / w.slots;
    free.sort(
      (a, b) =>
        util(a) - util(b) ||
        b.slots - a.slots ||
        a.cpuPercent - b.cpuPercent ||
        a.eventLoopDelayMs - b.eventLoopDelayMs ||
        a.memoryRssBytes - b.memoryRssBytes ||
        a.queueLength - b.queueLength ||
        (a.nodeId < b.nodeId ? -1 : 1),
    );
    const w = free[0] as PlacementWorker;
    used.set(w.nodeId, (used.get(w.nodeId) ?? 0) + 1);
    const spec = s.laneSpecs[t.lane];
    out.push(
      spec?.kind === "shard"
        ? { taskId: t.id, nodeId: w.nodeId, shard: spec.shard }
        : { taskId: t.id, nodeId: w.nodeId },
    );
  }
  return out;
}

// ---- properties -----------------------------------------------------------------------------

describe("placeTasks properties", () => {
  it("equals the task-by-task reference (priority, FIFO, best score)", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        expect(placeTasks(lanesOf(s), s.workers, s.shards)).toEqual(reference(s));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("never over-commits a slot, never places on a non-accepting or non-matching worker, places a task once", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const out = placeTasks(lanesOf(s), s.workers, s.shards);
        const count = new Map<string, number>();
        for (const d of out) count.set(d.nodeId, (count.get(d.nodeId) ?? 0) + 1);
        for (const w of s.workers) {
          const n = count.get(w.nodeId) ?? 0;
          expect(n).toBeLessThanOrEqual(Math.max(0, w.slots - w.running));
          if (!w.accepting) expect(n).toBe(0);
        }
        const byId = new Map(s.tasks.map((t) => [t.id, t]));
        expect(new Set(out.map((d) => d.taskId)).size).toBe(out.length);
        for (const d of out) {
          const t = byId.get(d.taskId);
          const w = s.workers.find((x) => x.nodeId === d.nodeId);
          expect(t).toBeDefined();
          expect(w).toBeDefined();
          if (t !== undefined && w !== undefined) expect(eligible(s, t, w)).toBe(true);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("is work-conserving: a waiting task has no eligible worker with a free slot left", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const out = placeTasks(lanesOf(s), s.workers, s.shards);
        const placed = new Set(out.map((d) => d.taskId));
        const used = new Map<string, number>();
        for (const d of out) used.set(d.nodeId, (used.get(d.nodeId) ?? 0) + 1);
        for (const t of s.tasks) {
          if (placed.has(t.id)) continue;
          for (const w of s.workers) {
            if (eligible(s, t, w))
              expect(w.running + (used.get(w.nodeId) ?? 0)).toBeGreaterThanOrEqual(w.slots);
          }
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("never skips a task for a later one (by priority, then FIFO) that went to a worker it could use", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const out = placeTasks(lanesOf(s), s.workers, s.shards);
        const placed = new Set(out.map((d) => d.taskId));
        const byId = new Map(s.tasks.map((t) => [t.id, t]));
        for (const waiting of s.tasks) {
          if (placed.has(waiting.id)) continue;
          for (const d of out) {
            const later = byId.get(d.taskId);
            const w = s.workers.find((x) => x.nodeId === d.nodeId);
            if (later === undefined || w === undefined) continue;
            const isLater =
              later.priority > waiting.priority ||
              (later.priority === waiting.priority && later.seq > waiting.seq);
            if (isLater) expect(eligible(s, waiting, w)).toBe(false);
          }
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("respects the limit, keeping the same order", () => {
    fc.assert(
      fc.property(scenarioArb, fc.integer({ min: 0, max: 5 }), (s, limit) => {
        const all = placeTasks(lanesOf(s), s.workers, s.shards);
        expect(placeTasks(lanesOf(s), s.workers, s.shards, limit)).toEqual(all.slice(0, limit));
      }),
      { numRuns: NUM_RUNS },
    );
  });
});

describe("placeTasks examples", () => {
  const worker = (nodeId: string, slots: number, extra: Partial<PlacementWorker> = {}): PlacementWorker => ({
    nodeId,
    labels: {},
    slots,
    running: 0,
    cpuPercent: 0,
    eventLoopDelayMs: 0,
    memoryRssBytes: 0,
    queueLength: 0,
    accepting: true,
    ...extra,
  });
  const tasks = (n: number, priority = 3, from = 0): PlacementTask[] =>
    Array.from({ length: n }, (_, i) => ({ id: `t${from + i}`, priority, seq: from + i }));

  it("fills mixed capacities 1/2/4 in proportion (max/mean utilisation 1)", () => {
    const ws = [worker("a", 1), worker("b", 2), worker("c", 4)];
    const out = placeTasks([{ kind: "balanced", selector: {}, tasks: tasks(7) }], ws);
    const per = (n: string) => out.filter((d) => d.nodeId === n).length;
    expect([per("a"), per("b"), per("c")]).toEqual([1, 2, 4]);
  });

  it("spreads by running/slots first, then by most slots, then by CPU", () => {
    const place = (ws: PlacementWorker[], n: number) =>
      placeTasks([{ kind: "balanced", selector: {}, tasks: tasks(n) }], ws).map((d) => d.nodeId);
    // b (0/2) first; then a (2/4) and b (1/2) tie on utilisation: a has more slots, though
    // more CPU.
    expect(
      place(
        [worker("a", 4, { running: 2, cpuPercent: 90 }), worker("b", 2, { running: 0, cpuPercent: 0 })],
        2,
      ),
    ).toEqual(["b", "a"]);
    // An idle group: the big worker first (one task moves it to 1/4, the small one to 1/1).
    expect(place([worker("e", 1), worker("f", 4)], 1)).toEqual(["f"]);
    // Same load and slots: less CPU.
    expect(
      place(
        [worker("c", 2, { running: 1, cpuPercent: 50 }), worker("d", 2, { running: 1, cpuPercent: 10 })],
        1,
      ),
    ).toEqual(["d"]);
  });

  it("places higher priority first, even when it was submitted later", () => {
    const lane = [...tasks(1, 1, 5), ...tasks(3, 3, 0)];
    const out = placeTasks([{ kind: "balanced", selector: {}, tasks: lane }], [worker("a", 2)]);
    expect(out.map((d) => d.taskId)).toEqual(["t5", "t0"]);
  });

  it("does not let an unplaceable lane block another", () => {
    const out = placeTasks(
      [
        { kind: "balanced", selector: { gpu: "yes" }, tasks: tasks(3, 1, 0) },
        { kind: "balanced", selector: {}, tasks: tasks(2, 5, 10) },
      ],
      [worker("a", 2)],
    );
    expect(out.map((d) => d.taskId)).toEqual(["t10", "t11"]);
  });

  it("sends shard tasks to the owner only, and holds them while the shard moves", () => {
    const shards: ShardOwnership = {
      totalShards: 2,
      owners: new Map([
        [0, "a"],
        [1, "b"],
      ]),
      moving: new Set([1]),
    };
    const out = placeTasks(
      [
        { kind: "shard", shard: 0, tasks: tasks(1, 3, 0) },
        { kind: "shard", shard: 1, tasks: tasks(1, 3, 1) },
      ],
      [worker("a", 1), worker("b", 1)],
      shards,
    );
    expect(out).toEqual([{ taskId: "t0", nodeId: "a", shard: 0 }]);
  });

  it("consumes a lane only as far as it places (100,000 waiting, 2 slots)", () => {
    let pulled = 0;
    function* many(): Generator<PlacementTask> {
      for (let i = 0; i < 100_000; i++) {
        pulled += 1;
        yield { id: `t${i}`, priority: 3, seq: i };
      }
    }
    const out = placeTasks([{ kind: "balanced", selector: {}, tasks: many() }], [worker("a", 2)]);
    expect(out).toHaveLength(2);
    expect(pulled).toBe(2);
  });
});
