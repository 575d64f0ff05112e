import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  diffOwners,
  type MemberSpec,
  type Owners,
  type OwnershipDiff,
  ownersEqual,
  type Plan,
  type PlanInput,
  planAssignment,
  primaryShard,
  type StrategyName,
  strategyNames,
} from "./assignment.js";

const NUM_RUNS = 300;

// ---------------------------------------------------------------------------------------------------------
// Reference helpers, written independently of the implementation so the properties are not tautologies.
// ---------------------------------------------------------------------------------------------------------

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedIds(members: readonly MemberSpec[]): string[] {
  return members.map((m) => m.nodeId).sort(byCodeUnit);
}

function effectiveCapacity(capacity: number): bigint {
  return BigInt(Number.isFinite(capacity) && capacity >= 1 ? Math.floor(capacity) : 1);
}

/** Exact proportional share as floor plus "has a fractional part". */
function shareBounds(members: readonly MemberSpec[], shardCount: number, nodeId: string): [number, number] {
  const sum = members.reduce((acc, m) => acc + effectiveCapacity(m.capacity), 0n);
  const member = members.find((m) => m.nodeId === nodeId);
  if (member === undefined) throw new Error(`no member ${nodeId}`);
  const product = BigInt(shardCount) * effectiveCapacity(member.capacity);
  const floor = Number(product / sum);
  return [floor, product % sum === 0n ? floor : floor + 1];
}

/**
 * Hamilton apportionment done seat by seat: start from the floors and hand each leftover seat to the member
 * whose exact share exceeds its current allotment the most (ties to the smaller nodeId).
 */
function referenceQuotas(members: readonly MemberSpec[], shardCount: number): Map<string, number> {
  const ids = sortedIds(members);
  const sum = members.reduce((acc, m) => acc + effectiveCapacity(m.capacity), 0n);
  const S = BigInt(shardCount);
  const cap = new Map(members.map((m) => [m.nodeId, effectiveCapacity(m.capacity)]));
  const quotas = new Map(ids.map((id) => [id, Number((S * (cap.get(id) ?? 0n)) / sum)]));
  let seated = [...quotas.values()].reduce((a, b) => a + b, 0);
  const bonus = new Set<string>();
  while (seated < shardCount) {
    let best: string | undefined;
    let bestExcess = -1n;
    for (const id of ids) {
      if (bonus.has(id)) continue;
      // excess * sum = S * cap - quota * sum, compared on a common denominator.
      const excess = S * (cap.get(id) ?? 0n) - BigInt(quotas.get(id) ?? 0) * sum;
      if (excess > bestExcess) {
        best = id;
        bestExcess = excess;
      }
    }
    if (best === undefined) throw new Error("ran out of members");
    bonus.add(best);
    quotas.set(best, (quotas.get(best) ?? 0) + 1);
    seated++;
  }
  return quotas;
}

function listOf(owners: Owners, nodeId: string): readonly number[] {
  return Object.hasOwn(owners, nodeId) ? (owners[nodeId] ?? []) : [];
}

function ownerOf(plan: Plan): Map<number, string> {
  const result = new Map<number, string>();
  for (const nodeId of Object.keys(plan.owners)) {
    for (const shard of listOf(plan.owners, nodeId)) result.set(shard, nodeId);
  }
  return result;
}

function totalLength(record: Readonly<Record<string, readonly number[]>>): number {
  return Object.values(record).reduce((acc, list) => acc + list.length, 0);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Builds a well-formed plan from "shard i belongs to pool[assign[i]]" (-1 = unowned). */
function planFrom(pool: readonly string[], assign: readonly number[]): Plan {
  const lists = new Map<string, number[]>(pool.map((id) => [id, []]));
  assign.forEach((owner, shard) => {
    const id = pool[owner];
    if (id !== undefined) lists.get(id)?.push(shard);
  });
  return { totalShards: assign.length, owners: Object.fromEntries(lists) };
}

/** Structural checks every plan must pass, whatever the inputs were. */
function expectWellFormed(plan: Plan, input: PlanInput): void {
  const ids = sortedIds(input.members);
  expect(Object.keys(plan.owners).sort(byCodeUnit)).toEqual(ids);
  expect(Number.isSafeInteger(plan.totalShards) && plan.totalShards >= 0).toBe(true);
  if (input.strategy === "sticky") expect(plan.totalShards).toBe(input.shardCount);
  else expect(plan.totalShards).toBe(ids.length);

  const seen = new Map<number, number>();
  for (const id of ids) {
    const list = listOf(plan.owners, id);
    list.forEach((shard, i) => {
      expect(Number.isInteger(shard) && !Object.is(shard, -0)).toBe(true);
      expect(shard >= 0 && shard < plan.totalShards).toBe(true);
      if (i > 0) expect(shard).toBeGreaterThan(list[i - 1] ?? Number.NaN);
      seen.set(shard, (seen.get(shard) ?? 0) + 1);
    });
  }
  if (ids.length > 0) {
    // Every shard owned by exactly one member.
    expect(seen.size).toBe(plan.totalShards);
    expect([...seen.values()].every((count) => count === 1)).toBe(true);
  } else {
    expect(plan.owners).toEqual({});
  }
}

/** Reconstructs `after` from `before` plus the diff, node by node. */
function applyDiff(before: Plan | undefined, diff: OwnershipDiff, after: Plan): void {
  const nodes = new Set([...Object.keys(before?.owners ?? {}), ...Object.keys(after.owners)]);
  for (const nodeId of nodes) {
    const lost = new Set(listOf(diff.losses, nodeId));
    const rebuilt = [
      ...listOf(before?.owners ?? {}, nodeId).filter((s) => !lost.has(s)),
      ...listOf(diff.gains, nodeId),
    ];
    expect(rebuilt.sort((a, b) => a - b)).toEqual([...listOf(after.owners, nodeId)]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------------------

// Prototype-ish names catch Record lookups that are not own-property checks; digit strings catch
// integer-like keys, which objects enumerate before all others.
const nodeIdArb = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.constantFrom("__proto__", "constructor", "toString", "", "é", "😀", "10", "9", "B"),
  },
  { weight: 4, arbitrary: fc.string({ maxLength: 4 }) },
);
const capacityArb = fc.integer({ min: 1, max: 8 });
const oddCapacityArb = fc.oneof(
  capacityArb,
  fc.constantFrom(0, -3, Number.NaN, 2.7, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY),
  fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
);

function membersArb(opts: {
  minLength?: number;
  maxLength?: number;
  capacity?: fc.Arbitrary<number>;
}): fc.Arbitrary<MemberSpec[]> {
  return fc.uniqueArray(fc.record({ nodeId: nodeIdArb, capacity: opts.capacity ?? capacityArb }), {
    selector: (m) => m.nodeId,
    minLength: opts.minLength ?? 0,
    maxLength: opts.maxLength ?? 10,
  });
}

const strategyArb = fc.constantFrom<StrategyName>(...strategyNames);
const shardCountArb = fc.integer({ min: 1, max: 40 });

/** A well-formed previous plan over the current members plus some departed ones, any totalShards. */
const stickyScenarioArb = fc
  .record({
    members: membersArb({ capacity: oddCapacityArb }),
    departed: fc.uniqueArray(nodeIdArb, { maxLength: 3 }),
    shardCount: shardCountArb,
    previousTotal: fc.integer({ min: 0, max: 48 }),
  })
  .chain(({ members, departed, shardCount, previousTotal }) => {
    const pool = [...new Set([...members.map((m) => m.nodeId), ...departed])];
    return fc
      .array(fc.integer({ min: -1, max: pool.length - 1 }), {
        minLength: previousTotal,
        maxLength: previousTotal,
      })
      .map((assign) => ({ members, shardCount, previous: planFrom(pool, assign) }));
  });

/** Malformed previous plans: duplicates, out-of-range, fractional, -0, NaN, shards claimed twice. */
const garbagePreviousArb = fc.record({
  totalShards: fc.oneof(
    fc.integer({ min: -2, max: 50 }),
    fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY),
  ),
  owners: fc.dictionary(
    nodeIdArb,
    fc.array(
      fc.oneof(
        fc.integer({ min: -3, max: 50 }),
        fc.constantFrom(-0, 1.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER),
      ),
      { maxLength: 12 },
    ),
    { maxKeys: 6 },
  ),
});

// ---------------------------------------------------------------------------------------------------------
// Table-driven examples (computed by hand)
// ---------------------------------------------------------------------------------------------------------

const m = (nodeId: string, capacity = 1): MemberSpec => ({ nodeId, capacity });

describe("planAssignment: concrete examples", () => {
  const cases: { name: string; input: PlanInput; expected: Plan }[] = [
    {
      name: "modulo, 3 members in shuffled order",
      input: { strategy: "modulo", members: [m("w2"), m("w3"), m("w1")], shardCount: 99 },
      expected: { totalShards: 3, owners: { w1: [0], w2: [1], w3: [2] } },
    },
    {
      name: "modulo orders by UTF-16 code unit, not locale",
      input: { strategy: "modulo", members: [m("b"), m("é"), m("a"), m("Z"), m("B")], shardCount: 1 },
      expected: { totalShards: 5, owners: { B: [0], Z: [1], a: [2], b: [3], é: [4] } },
    },
    {
      name: "modulo, zero members",
      input: { strategy: "modulo", members: [], shardCount: 8 },
      expected: { totalShards: 0, owners: {} },
    },
    {
      name: "modulo ignores previous and capacity",
      input: {
        strategy: "modulo",
        members: [m("y", 7), m("x", 1)],
        shardCount: 5,
        previous: { totalShards: 2, owners: { x: [1], y: [0] } },
      },
      expected: { totalShards: 2, owners: { x: [0], y: [1] } },
    },
    {
      // shares 2.5 / 2.5 / 5 -> floors 2/2/5, the leftover seat ties between a and b and goes to "a".
      name: "sticky 10 shards over capacities 1,1,2",
      input: { strategy: "sticky", members: [m("c", 2), m("b", 1), m("a", 1)], shardCount: 10 },
      expected: { totalShards: 10, owners: { a: [0, 1, 2], b: [3, 4], c: [5, 6, 7, 8, 9] } },
    },
    {
      name: "sticky 10 shards over 3 equal members",
      input: { strategy: "sticky", members: [m("n3"), m("n1"), m("n2")], shardCount: 10 },
      expected: { totalShards: 10, owners: { n1: [0, 1, 2, 3], n2: [4, 5, 6], n3: [7, 8, 9] } },
    },
    {
      // shares 1.43 / 2.86 / 5.71 -> floors 1/2/5; the 2 leftover seats go to the largest remainders: b, c.
      name: "sticky 10 shards over capacities 1,2,4",
      input: { strategy: "sticky", members: [m("a", 1), m("b", 2), m("c", 4)], shardCount: 10 },
      expected: { totalShards: 10, owners: { a: [0], b: [1, 2, 3], c: [4, 5, 6, 7, 8, 9] } },
    },
    {
      name: "sticky with fewer shards than members: quota-0 members keep an empty list",
      input: { strategy: "sticky", members: [m("d"), m("c"), m("b"), m("a")], shardCount: 2 },
      expected: { totalShards: 2, owners: { a: [0], b: [1], c: [], d: [] } },
    },
    {
      name: "sticky, zero members: all shards unowned",
      input: {
        strategy: "sticky",
        members: [],
        shardCount: 10,
        previous: { totalShards: 10, owners: { a: [0] } },
      },
      expected: { totalShards: 10, owners: {} },
    },
    {
      // 6/4 = 1.5 each -> quotas 2/2/1/1; c keeps its lowest shard, d receives the freed one.
      name: "sticky join moves only what the newcomer needs",
      input: {
        strategy: "sticky",
        members: [m("a"), m("b"), m("c"), m("d")],
        shardCount: 6,
        previous: { totalShards: 6, owners: { a: [0, 1], b: [2, 3], c: [4, 5] } },
      },
      expected: { totalShards: 6, owners: { a: [0, 1], b: [2, 3], c: [4], d: [5] } },
    },
    {
      // b's shards 2,3 are handed out in ascending order to the deficits in nodeId order.
      name: "sticky leave redistributes only the leaver's shards",
      input: {
        strategy: "sticky",
        members: [m("a"), m("c"), m("d")],
        shardCount: 6,
        previous: { totalShards: 6, owners: { a: [0, 1], b: [2, 3], c: [4], d: [5] } },
      },
      expected: { totalShards: 6, owners: { a: [0, 1], c: [2, 4], d: [3, 5] } },
    },
    {
      name: "sticky shrinking shardCount drops shards >= shardCount",
      input: {
        strategy: "sticky",
        members: [m("a"), m("b")],
        shardCount: 6,
        previous: { totalShards: 8, owners: { a: [0, 1, 2, 3], b: [4, 5, 6, 7] } },
      },
      expected: { totalShards: 6, owners: { a: [0, 1, 2], b: [3, 4, 5] } },
    },
    {
      name: "sticky growing shardCount hands out the new shards",
      input: {
        strategy: "sticky",
        members: [m("a"), m("b")],
        shardCount: 6,
        previous: { totalShards: 4, owners: { a: [0, 1], b: [2, 3] } },
      },
      expected: { totalShards: 6, owners: { a: [0, 1, 4], b: [2, 3, 5] } },
    },
    {
      // 0, -1 and NaN count as 1 and 2.9 floors to 2: sum 5 over 5 shards.
      name: "sticky normalises odd capacities",
      input: {
        strategy: "sticky",
        members: [m("a", 0), m("b", -1), m("c", Number.NaN), m("d", 2.9)],
        shardCount: 5,
      },
      expected: { totalShards: 5, owners: { a: [0], b: [1], c: [2], d: [3, 4] } },
    },
    {
      // Valid claims of a: 0 (from -0), 1, 3 -> keeps 0,1; b's claim on 1 loses to a, keeps 2; 3 is free.
      name: "sticky tolerates a malformed previous plan",
      input: {
        strategy: "sticky",
        members: [m("b"), m("a")],
        shardCount: 4,
        previous: {
          totalShards: 4,
          owners: { a: [3, 3, -1, 1.5, Number.NaN, 99, -0, 1], b: [1, 2], ghost: [0] },
        },
      },
      expected: { totalShards: 4, owners: { a: [0, 1], b: [2, 3] } },
    },
    {
      // The larger capacity must win the single seat even though a float share would be ~0.5 for both.
      name: "sticky quota arithmetic is exact for huge capacities",
      input: {
        strategy: "sticky",
        members: [m("a", Number.MAX_SAFE_INTEGER - 1), m("b", Number.MAX_SAFE_INTEGER)],
        shardCount: 1,
      },
      expected: { totalShards: 1, owners: { a: [], b: [0] } },
    },
  ];

  it.each(cases)("$name", ({ input, expected }) => {
    const plan = planAssignment(input);
    expect(plan).toEqual(expected);
    expect(ownersEqual(plan, expected)).toBe(true);
    expectWellFormed(plan, input);
    expect(Object.is(plan.owners.a?.[0], -0)).toBe(false);
  });

  it("keeps prototype-named nodeIds as own keys", () => {
    const members = [m("__proto__"), m("constructor"), m("toString")];
    for (const strategy of strategyNames) {
      const plan = planAssignment({ strategy, members, shardCount: 3 });
      expect(Object.getPrototypeOf(plan.owners)).toBe(Object.prototype);
      expect(Object.keys(plan.owners).sort()).toEqual(["__proto__", "constructor", "toString"]);
      expect(primaryShard(plan.owners, "__proto__")).toBe(0);
      expect(primaryShard(plan.owners, "hasOwnProperty")).toBe(-1);
      const again = planAssignment({ strategy, members, shardCount: 3, previous: plan });
      expect(diffOwners(plan, again).moved).toBe(0);
    }
  });

  it("rejects duplicate nodeIds", () => {
    for (const strategy of strategyNames) {
      expect(() => planAssignment({ strategy, members: [m("a"), m("b"), m("a", 3)], shardCount: 4 })).toThrow(
        RangeError,
      );
    }
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])(
    "sticky rejects shardCount %s; modulo ignores it",
    (shardCount) => {
      expect(() => planAssignment({ strategy: "sticky", members: [m("a")], shardCount })).toThrow(RangeError);
      expect(planAssignment({ strategy: "modulo", members: [m("a")], shardCount })).toEqual({
        totalShards: 1,
        owners: { a: [0] },
      });
    },
  );

  it("exports the strategy names, frozen", () => {
    expect(strategyNames).toEqual(["modulo", "sticky"]);
    expect(Object.isFrozen(strategyNames)).toBe(true);
  });
});

describe("sticky: largest-remainder caveats (pinned)", () => {
  // Hamilton apportionment suffers the "new states paradox": a join can shift a seat between two existing
  // members. 5 shards over capacities 1/3/5 -> 0/2/3; with d(2) joining, shares become
  // .45/1.36/2.27/.91 -> 1/1/2/1, so "a" gains although only "d" is new. The planner still moves the
  // minimum possible for those quotas.
  it("a join can give a shard to an existing member", () => {
    const members = [m("a", 1), m("b", 3), m("c", 5)];
    const before = planAssignment({ strategy: "sticky", members, shardCount: 5 });
    expect(before.owners).toEqual({ a: [], b: [0, 1], c: [2, 3, 4] });
    const after = planAssignment({
      strategy: "sticky",
      members: [...members, m("d", 2)],
      shardCount: 5,
      previous: before,
    });
    expect(after.owners).toEqual({ a: [1], b: [0], c: [2, 3], d: [4] });
    expect(diffOwners(before, after)).toEqual({
      moved: 2,
      losses: { b: [1], c: [4] },
      gains: { a: [1], d: [4] },
      unchanged: [],
    });
  });

  it("a nodeId tie-break can hand a seat to an existing member while the newcomer gets none", () => {
    const before = planAssignment({ strategy: "sticky", members: [m("a", 1), m("b", 4)], shardCount: 2 });
    expect(before.owners).toEqual({ a: [], b: [0, 1] });
    const after = planAssignment({
      strategy: "sticky",
      members: [m("a", 1), m("b", 4), m("c", 1)],
      shardCount: 2,
      previous: before,
    });
    expect(after.owners).toEqual({ a: [1], b: [0], c: [] });
    expect(diffOwners(before, after).moved).toBe(1);
  });
});

describe("diffOwners / ownersEqual / primaryShard: concrete examples", () => {
  it("reports losses, gains, unchanged and moved across a totalShards change", () => {
    const before: Plan = { totalShards: 8, owners: { a: [0, 1, 2, 3], b: [4, 5, 6, 7], gone: [] } };
    const after: Plan = { totalShards: 6, owners: { a: [0, 1, 2], b: [3, 4, 5], new: [] } };
    expect(diffOwners(before, after)).toEqual({
      moved: 3, // 3 changed hands, 6 and 7 disappeared
      losses: { a: [3], b: [6, 7] },
      gains: { b: [3] },
      unchanged: [],
    });
  });

  it("treats an undefined before as an empty plan", () => {
    const after: Plan = { totalShards: 4, owners: { a: [0, 2], b: [1, 3], c: [] } };
    expect(diffOwners(undefined, after)).toEqual({
      moved: 4,
      losses: {},
      gains: { a: [0, 2], b: [1, 3] },
      unchanged: [],
    });
  });

  it("lists departed nodes under losses and identical ones (even empty) under unchanged", () => {
    const before: Plan = { totalShards: 3, owners: { a: [0], b: [1, 2], idle: [] } };
    const after: Plan = { totalShards: 3, owners: { a: [0, 1, 2], idle: [] } };
    expect(diffOwners(before, after)).toEqual({
      moved: 2,
      losses: { b: [1, 2] },
      gains: { a: [1, 2] },
      unchanged: ["idle"],
    });
  });

  it("counts shards that appear when totalShards grows", () => {
    const before: Plan = { totalShards: 2, owners: { a: [0], b: [1] } };
    const after: Plan = { totalShards: 3, owners: { a: [0], b: [1], c: [2] } };
    expect(diffOwners(before, after)).toMatchObject({ moved: 1, gains: { c: [2] }, unchanged: ["a", "b"] });
  });

  it("ownersEqual is structural and key-order independent, but a key with [] is not an absent key", () => {
    const a: Plan = { totalShards: 3, owners: { x: [0, 1], y: [2] } };
    expect(ownersEqual(a, { totalShards: 3, owners: { y: [2], x: [0, 1] } })).toBe(true);
    expect(ownersEqual(a, { totalShards: 4, owners: { x: [0, 1], y: [2] } })).toBe(false);
    expect(ownersEqual(a, { totalShards: 3, owners: { x: [0, 1], y: [2], z: [] } })).toBe(false);
    expect(ownersEqual({ totalShards: 3, owners: { x: [0, 1], y: [2], z: [] } }, a)).toBe(false);
    expect(ownersEqual(a, { totalShards: 3, owners: { x: [0], y: [1, 2] } })).toBe(false);
    expect(ownersEqual(a, { totalShards: 3, owners: { x: [0, 1], z: [2] } })).toBe(false);
    expect(ownersEqual({ totalShards: 0, owners: {} }, { totalShards: 0, owners: {} })).toBe(true);
  });

  it("primaryShard returns the first shard or -1", () => {
    const owners: Owners = { a: [3, 7], b: [], constructor: [5] };
    expect(primaryShard(owners, "a")).toBe(3);
    expect(primaryShard(owners, "b")).toBe(-1);
    expect(primaryShard(owners, "missing")).toBe(-1);
    expect(primaryShard(owners, "constructor")).toBe(5);
    expect(primaryShard(owners, "toString")).toBe(-1);
    expect(primaryShard({}, "__proto__")).toBe(-1);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------

describe("planAssignment: properties", () => {
  it("always yields a well-formed plan: every member a key, ascending lists, each shard owned once", () => {
    fc.assert(
      fc.property(
        strategyArb,
        membersArb({ capacity: oddCapacityArb }),
        shardCountArb,
        fc.option(garbagePreviousArb, { nil: undefined }),
        (strategy, members, shardCount, previous) => {
          const input: PlanInput = { strategy, members, shardCount, previous };
          expectWellFormed(planAssignment(input), input);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("modulo: totalShards is the member count and the i-th member by nodeId owns exactly [i]", () => {
    fc.assert(
      fc.property(membersArb({ maxLength: 16 }), shardCountArb, (members, shardCount) => {
        const plan = planAssignment({ strategy: "modulo", members, shardCount });
        expect(plan.totalShards).toBe(members.length);
        sortedIds(members).forEach((id, i) => {
          expect(listOf(plan.owners, id)).toEqual([i]);
          expect(primaryShard(plan.owners, id)).toBe(i);
        });
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky: every member's count is its largest-remainder quota, within floor/ceil of its share", () => {
    fc.assert(
      fc.property(stickyScenarioArb, ({ members, shardCount, previous }) => {
        fc.pre(members.length > 0);
        const plan = planAssignment({ strategy: "sticky", members, shardCount, previous });
        const quotas = referenceQuotas(members, shardCount);
        expect([...quotas.values()].reduce((a, b) => a + b, 0)).toBe(shardCount);
        for (const { nodeId } of members) {
          const count = listOf(plan.owners, nodeId).length;
          const [floor, ceil] = shareBounds(members, shardCount, nodeId);
          expect(count === floor || count === ceil).toBe(true);
          expect(count).toBe(quotas.get(nodeId));
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky: equal capacities give a balanced plan (counts differ by at most one)", () => {
    fc.assert(
      fc.property(
        membersArb({ minLength: 1, capacity: fc.constant(3) }),
        shardCountArb,
        (members, shardCount) => {
          const counts = Object.values(
            planAssignment({ strategy: "sticky", members, shardCount }).owners,
          ).map((l) => l.length);
          expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky minimality: each member keeps its lowest min(held, quota) shards and nothing else moves", () => {
    fc.assert(
      fc.property(stickyScenarioArb, ({ members, shardCount, previous }) => {
        fc.pre(members.length > 0);
        const plan = planAssignment({ strategy: "sticky", members, shardCount, previous });
        const quotas = referenceQuotas(members, shardCount);
        const limit = Math.min(shardCount, previous.totalShards);
        let keptTotal = 0;
        for (const { nodeId } of members) {
          const held = listOf(previous.owners, nodeId).filter((s) => s < limit);
          const quota = quotas.get(nodeId) ?? 0;
          const now = new Set(listOf(plan.owners, nodeId));
          const keep = Math.min(held.length, quota);
          expect(held.filter((s) => now.has(s))).toEqual(held.slice(0, keep));
          keptTotal += keep;
        }
        // No assignment respecting the quotas can keep more than sum(min(held, quota)) shards in place.
        const diff = diffOwners(previous, plan);
        const vanished = [...ownerOf(previous).keys()].filter((s) => s >= shardCount).length;
        expect(diff.moved).toBe(shardCount - keptTotal + vanished);
        for (const { nodeId } of members) {
          const held = listOf(previous.owners, nodeId).filter((s) => s < limit).length;
          const quota = quotas.get(nodeId) ?? 0;
          // Gains only fill deficits; a current member only gives up surplus or vanished shards.
          if (listOf(diff.gains, nodeId).length > 0) expect(quota).toBeGreaterThan(held);
          const surplus = listOf(diff.losses, nodeId).filter((s) => s < shardCount).length;
          expect(surplus).toBe(Math.max(0, held - quota));
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky join (equal capacities): only the newcomer gains and moved equals its quota", () => {
    fc.assert(
      fc.property(
        membersArb({ minLength: 1, maxLength: 11, capacity: fc.constant(2) }),
        shardCountArb,
        fc.nat(),
        (all, shardCount, pick) => {
          const joiner = all[pick % all.length] as MemberSpec;
          const members = all.filter((x) => x !== joiner);
          const before = planAssignment({ strategy: "sticky", members, shardCount });
          const after = planAssignment({ strategy: "sticky", members: all, shardCount, previous: before });
          const diff = diffOwners(before, after);
          const quota = referenceQuotas(all, shardCount).get(joiner.nodeId) ?? 0;
          expect(listOf(after.owners, joiner.nodeId)).toHaveLength(quota);
          expect(diff.moved).toBe(quota);
          expect(Object.keys(diff.gains)).toEqual(quota > 0 ? [joiner.nodeId] : []);
          // Joining an empty group takes unowned shards, which nobody loses.
          expect(totalLength(diff.losses)).toBe(members.length > 0 ? quota : 0);
          // Existing members only shrink.
          for (const { nodeId } of members) {
            const now = new Set(listOf(after.owners, nodeId));
            expect(listOf(before.owners, nodeId).filter((s) => !now.has(s))).toEqual([
              ...listOf(diff.losses, nodeId),
            ]);
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky leave (equal capacities): moved is the leaver's count, nothing moves between stayers", () => {
    fc.assert(
      fc.property(
        membersArb({ minLength: 1, maxLength: 11, capacity: fc.constant(5) }),
        shardCountArb,
        fc.nat(),
        (all, shardCount, pick) => {
          const leaver = all[pick % all.length] as MemberSpec;
          const stayers = all.filter((x) => x !== leaver);
          const before = planAssignment({ strategy: "sticky", members: all, shardCount });
          const after = planAssignment({
            strategy: "sticky",
            members: stayers,
            shardCount,
            previous: before,
          });
          const diff = diffOwners(before, after);
          const orphaned = listOf(before.owners, leaver.nodeId);
          expect(diff.moved).toBe(orphaned.length);
          expect(Object.keys(diff.losses)).toEqual(orphaned.length > 0 ? [leaver.nodeId] : []);
          const orphanSet = new Set(orphaned);
          for (const list of Object.values(diff.gains))
            expect(list.every((s) => orphanSet.has(s))).toBe(true);
          if (stayers.length > 0) expect(totalLength(diff.gains)).toBe(orphaned.length);
          for (const { nodeId } of stayers) {
            const now = new Set(listOf(after.owners, nodeId));
            expect(listOf(before.owners, nodeId).every((s) => now.has(s))).toBe(true);
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("sticky under churn (any capacities): every step moves exactly the unavoidable shards", () => {
    const poolArb = membersArb({ minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(
        poolArb.chain((pool) =>
          fc.record({
            pool: fc.constant(pool),
            steps: fc.array(fc.subarray(pool), { minLength: 1, maxLength: 8 }),
            shardCount: shardCountArb,
          }),
        ),
        ({ steps, shardCount }) => {
          let previous: Plan | undefined;
          for (const members of steps) {
            const plan = planAssignment({ strategy: "sticky", members, shardCount, previous });
            if (previous !== undefined && members.length > 0) {
              const quotas = referenceQuotas(members, shardCount);
              const prev = previous;
              const kept = members.reduce(
                (acc, { nodeId }) =>
                  acc + Math.min(listOf(prev.owners, nodeId).length, quotas.get(nodeId) ?? 0),
                0,
              );
              expect(diffOwners(previous, plan).moved).toBe(shardCount - kept);
            }
            previous = plan;
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("idempotence: re-planning with the plan as previous returns the same plan", () => {
    fc.assert(
      fc.property(
        strategyArb,
        membersArb({ capacity: oddCapacityArb }),
        shardCountArb,
        fc.option(garbagePreviousArb, { nil: undefined }),
        (strategy, members, shardCount, previous) => {
          const plan = planAssignment({ strategy, members, shardCount, previous });
          const again = planAssignment({ strategy, members, shardCount, previous: plan });
          expect(ownersEqual(plan, again)).toBe(true);
          expect(again).toEqual(plan);
          expect(diffOwners(plan, again)).toEqual({
            moved: 0,
            losses: {},
            gains: {},
            unchanged: sortedIds(members),
          });
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("determinism: member order and previous key order do not matter, down to key order", () => {
    fc.assert(
      fc.property(
        strategyArb,
        stickyScenarioArb.chain((scenario) =>
          fc.record({
            scenario: fc.constant(scenario),
            shuffled: fc.shuffledSubarray(scenario.members, {
              minLength: scenario.members.length,
              maxLength: scenario.members.length,
            }),
            reversedPrevious: fc.boolean(),
          }),
        ),
        (strategy, { scenario, shuffled, reversedPrevious }) => {
          const { members, shardCount, previous } = scenario;
          const reordered: Plan = reversedPrevious
            ? {
                totalShards: previous.totalShards,
                owners: Object.fromEntries(Object.entries(previous.owners).reverse()),
              }
            : previous;
          const a = planAssignment({ strategy, members, shardCount, previous });
          const b = planAssignment({ strategy, members: shuffled, shardCount, previous: reordered });
          expect(ownersEqual(a, b)).toBe(true);
          expect(JSON.stringify(b)).toBe(JSON.stringify(a));
          expect(JSON.stringify(diffOwners(reordered, b))).toBe(JSON.stringify(diffOwners(previous, a)));
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("does not mutate its input", () => {
    fc.assert(
      fc.property(strategyArb, stickyScenarioArb, (strategy, { members, shardCount, previous }) => {
        const snapshot = structuredClone({ members, previous });
        const plan = planAssignment({ strategy, members, shardCount, previous });
        diffOwners(previous, plan);
        expect({ members, previous }).toEqual(snapshot);
      }),
      { numRuns: 100 },
    );
  });
});

describe("diffOwners / ownersEqual: properties", () => {
  /** Two well-formed plans over a shared pool of nodeIds, with independent totalShards. */
  const planPairArb = fc
    .record({
      pool: fc.uniqueArray(nodeIdArb, { minLength: 1, maxLength: 6 }),
      beforeTotal: fc.integer({ min: 0, max: 30 }),
      afterTotal: fc.integer({ min: 0, max: 30 }),
      fullyOwned: fc.boolean(),
    })
    .chain(({ pool, beforeTotal, afterTotal, fullyOwned }) => {
      const owner = fc.integer({ min: fullyOwned ? 0 : -1, max: pool.length - 1 });
      return fc.record({
        fullyOwned: fc.constant(fullyOwned),
        before: fc
          .array(owner, { minLength: beforeTotal, maxLength: beforeTotal })
          .map((a) => planFrom(pool, a)),
        after: fc
          .array(owner, { minLength: afterTotal, maxLength: afterTotal })
          .map((a) => planFrom(pool, a)),
      });
    });

  it("applying losses then gains to before yields after; moved counts exactly the touched shards", () => {
    fc.assert(
      fc.property(planPairArb, ({ before, after }) => {
        const diff = diffOwners(before, after);
        applyDiff(before, diff, after);
        const touched = new Set([...Object.values(diff.losses).flat(), ...Object.values(diff.gains).flat()]);
        expect(diff.moved).toBe(touched.size);
        const ownerBefore = ownerOf(before);
        const ownerAfter = ownerOf(after);
        const changed = range(Math.max(before.totalShards, after.totalShards)).filter(
          (s) => ownerBefore.get(s) !== ownerAfter.get(s),
        );
        expect(diff.moved).toBe(changed.length);
        for (const list of [...Object.values(diff.losses), ...Object.values(diff.gains)]) {
          expect(list.length).toBeGreaterThan(0);
          expect([...list].sort((x, y) => x - y)).toEqual(list);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("sum of losses equals sum of gains when totalShards is unchanged and every shard is owned", () => {
    fc.assert(
      fc.property(planPairArb, ({ before, after, fullyOwned }) => {
        fc.pre(fullyOwned && before.totalShards === after.totalShards);
        const diff = diffOwners(before, after);
        expect(totalLength(diff.losses)).toBe(totalLength(diff.gains));
        expect(totalLength(diff.losses)).toBe(diff.moved);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("is antisymmetric: swapping the plans swaps losses and gains", () => {
    fc.assert(
      fc.property(planPairArb, ({ before, after }) => {
        const forward = diffOwners(before, after);
        const backward = diffOwners(after, before);
        expect(backward.losses).toEqual(forward.gains);
        expect(backward.gains).toEqual(forward.losses);
        expect(backward.moved).toBe(forward.moved);
        expect(backward.unchanged).toEqual(forward.unchanged);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("unchanged holds exactly the shared keys with identical lists, sorted by code unit", () => {
    fc.assert(
      fc.property(planPairArb, ({ before, after }) => {
        const expected = Object.keys(before.owners)
          .filter((id) => Object.hasOwn(after.owners, id))
          .filter(
            (id) => JSON.stringify(listOf(before.owners, id)) === JSON.stringify(listOf(after.owners, id)),
          )
          .sort(byCodeUnit);
        expect(diffOwners(before, after).unchanged).toEqual(expected);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("from undefined: everything owned is a gain", () => {
    fc.assert(
      fc.property(planPairArb, ({ after }) => {
        const diff = diffOwners(undefined, after);
        expect(diff.losses).toEqual({});
        expect(diff.unchanged).toEqual([]);
        expect(diff.moved).toBe(ownerOf(after).size);
        applyDiff(undefined, diff, after);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("ownersEqual agrees with an empty diff and the same totalShards", () => {
    fc.assert(
      fc.property(planPairArb, ({ before, after }) => {
        expect(ownersEqual(before, before)).toBe(true);
        const diff = diffOwners(before, after);
        const sameKeys =
          JSON.stringify(Object.keys(before.owners).sort()) ===
          JSON.stringify(Object.keys(after.owners).sort());
        expect(ownersEqual(before, after)).toBe(
          before.totalShards === after.totalShards && diff.moved === 0 && sameKeys,
        );
        expect(ownersEqual(after, before)).toBe(ownersEqual(before, after));
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
