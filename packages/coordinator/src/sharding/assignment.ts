/**
 * Pure shard-assignment strategies for the coordinator leader.
 *
 * Everything here is a deterministic function of its arguments (no I/O, clocks or randomness) so that
 * any replica that becomes leader computes the same plan from the same membership snapshot, and so
 * that the planners can be property-tested exhaustively.
 *
 * Ordering convention: wherever members are ordered (modulo positions, quota tie-breaks, deficit
 * filling, record key order) nodeIds are compared by plain UTF-16 code-unit order (`<` on strings),
 * never `localeCompare`, because locale collation differs between runtimes and would make two
 * leaders disagree.
 *
 * @module
 */

/** Name of a shard-assignment strategy. */
export type StrategyName = "modulo" | "sticky";

/** Every supported strategy, e.g. for validating a CLI flag. */
export const strategyNames: readonly StrategyName[] = Object.freeze<StrategyName[]>(["modulo", "sticky"]);

/** A live member as seen by the planner. */
export interface MemberSpec {
  /** Unique identity of the worker within its group. */
  readonly nodeId: string;
  /**
   * Relative weight for `sticky`. Values that are not a finite number >= 1 (0, negatives, NaN,
   * ±Infinity) count as 1; fractional values are floored.
   */
  readonly capacity: number;
}

/**
 * Shard ownership: nodeId -> strictly ascending shard ids.
 *
 * Plans produced by {@link planAssignment} contain a key for every current member, with an empty
 * array for a member that owns nothing, so that "member with no work" stays distinguishable from
 * "not a member" and every member can be told its (possibly empty) share.
 */
export type Owners = Readonly<Record<string, readonly number[]>>;

/** Input to {@link planAssignment}. */
export interface PlanInput {
  readonly strategy: StrategyName;
  /** Current live members, in any order; nodeIds must be unique. */
  readonly members: readonly MemberSpec[];
  /** Fixed shard count for `sticky` (safe integer >= 1); ignored by `modulo`. */
  readonly shardCount: number;
  /** The plan currently in force, used by `sticky` to minimise movement; ignored by `modulo`. */
  readonly previous?: { readonly totalShards: number; readonly owners: Owners } | undefined;
}

/** An assignment of shards `0..totalShards-1` to members. */
export interface Plan {
  readonly totalShards: number;
  readonly owners: Owners;
}

/**
 * Computes the shard assignment for the current membership.
 *
 * - `modulo`: `totalShards` equals the member count; the i-th member in nodeId order owns shard i.
 *   Workers then process items where `taskId % totalShards === shardId`.
 * - `sticky`: `shardCount` shards split proportionally to capacity by the largest-remainder method
 *   (ties to the smaller nodeId), moving as few shards as possible relative to `previous`: each member
 *   keeps its lowest previously held shards up to its quota, and only orphaned and surplus shards are
 *   handed, in ascending order, to under-quota members in nodeId order.
 *
 * With zero members the plan has no owners (`modulo`: `totalShards` 0; `sticky`: `shardCount`
 * unowned shards). `previous` may be malformed (foreign strategy, out-of-range, duplicated or
 * doubly-owned shards): such claims are ignored or resolved in nodeId order rather than trusted.
 *
 * @throws RangeError if two members share a nodeId, or if `sticky` is given a `shardCount` that is
 *   not a safe integer >= 1 (a configuration error the caller should surface, not paper over).
 */
export function planAssignment(input: PlanInput): Plan {
  const sorted = sortMembers(input.members);
  switch (input.strategy) {
    case "modulo":
      return planModulo(sorted);
    case "sticky":
      return planSticky(sorted, input.shardCount, input.previous);
    default:
      return assertNever(input.strategy);
  }
}

/** Result of {@link diffOwners}. */
export interface OwnershipDiff {
  /**
   * Shard ids whose owner differs between the plans, an unowned shard counting as owner "none"; this
   * includes shards that appear or disappear because `totalShards` changed. Shard ids are compared
   * literally: under `modulo` a change of `totalShards` re-partitions items even for shards that keep
   * their owner, which this count deliberately does not try to model.
   */
  readonly moved: number;
  /** nodeId -> shards it owned before and does not own now (departed nodes too); only non-empty lists. */
  readonly losses: Readonly<Record<string, readonly number[]>>;
  /** nodeId -> shards it owns now and did not before; only non-empty lists. */
  readonly gains: Readonly<Record<string, readonly number[]>>;
  /** Nodes that are keys in both plans with element-wise identical lists, in nodeId order. */
  readonly unchanged: readonly string[];
}

/**
 * Describes how ownership changes from `before` to `after`; `before === undefined` is treated as an
 * empty plan, so every owned shard of `after` is a gain.
 *
 * Both plans are expected to be well formed (each shard listed at most once); if a shard is listed
 * under several nodes anyway, the smallest nodeId is taken as its owner for `moved`.
 */
export function diffOwners(before: Plan | undefined, after: Plan): OwnershipDiff {
  const beforeOwners: Owners = before?.owners ?? {};
  const nodeIds = [...new Set([...Object.keys(beforeOwners), ...Object.keys(after.owners)])].sort(compareIds);

  const losses: [string, number[]][] = [];
  const gains: [string, number[]][] = [];
  const unchanged: string[] = [];
  for (const nodeId of nodeIds) {
    const was = ownList(beforeOwners, nodeId);
    const now = ownList(after.owners, nodeId);
    const lost = setDifference(was ?? [], now ?? []);
    const gained = setDifference(now ?? [], was ?? []);
    if (lost.length > 0) losses.push([nodeId, lost]);
    if (gained.length > 0) gains.push([nodeId, gained]);
    if (was !== undefined && now !== undefined && listsEqual(was, now)) unchanged.push(nodeId);
  }

  const ownerBefore = ownerByShard(beforeOwners, nodeIds);
  const ownerAfter = ownerByShard(after.owners, nodeIds);
  let moved = 0;
  for (const shard of new Set([...ownerBefore.keys(), ...ownerAfter.keys()])) {
    if (ownerBefore.get(shard) !== ownerAfter.get(shard)) moved++;
  }

  return { moved, losses: Object.fromEntries(losses), gains: Object.fromEntries(gains), unchanged };
}

/**
 * Structural equality of two plans: same `totalShards`, same set of nodeId keys (a key with an empty
 * list is not the same as an absent key, because membership itself changed) and identical lists.
 * Key order is irrelevant.
 */
export function ownersEqual(a: Plan, b: Plan): boolean {
  if (a.totalShards !== b.totalShards) return false;
  const aKeys = Object.keys(a.owners);
  if (aKeys.length !== Object.keys(b.owners).length) return false;
  return aKeys.every((nodeId) => {
    const other = ownList(b.owners, nodeId);
    const mine = ownList(a.owners, nodeId);
    return other !== undefined && mine !== undefined && listsEqual(mine, other);
  });
}

/**
 * The first (lowest, since lists are ascending) shard owned by `nodeId`, or -1 if it owns none or is
 * not a key. Handy for `modulo`, where each member owns exactly one shard.
 */
export function primaryShard(owners: Owners, nodeId: string): number {
  return ownList(owners, nodeId)?.[0] ?? -1;
}

interface NormalizedMember {
  readonly nodeId: string;
  readonly capacity: number;
}

function planModulo(sorted: readonly NormalizedMember[]): Plan {
  return {
    totalShards: sorted.length,
    owners: Object.fromEntries(sorted.map((member, index) => [member.nodeId, [index]])),
  };
}

function planSticky(
  sorted: readonly NormalizedMember[],
  shardCount: number,
  previous: PlanInput["previous"],
): Plan {
  if (!Number.isSafeInteger(shardCount) || shardCount < 1) {
    throw new RangeError(`sticky strategy needs a shardCount that is a safe integer >= 1, got ${shardCount}`);
  }
  if (sorted.length === 0) return { totalShards: shardCount, owners: {} };

  const quotas = largestRemainderQuotas(sorted, shardCount);
  // A shard beyond either plan's range is not a claim worth honouring: beyond `shardCount` it no longer
  // exists, beyond `previous.totalShards` the previous plan was malformed.
  const claimLimit = previous === undefined ? 0 : Math.min(shardCount, previous.totalShards);
  const taken = new Uint8Array(shardCount);

  // Members are visited in nodeId order, so a shard that a malformed previous plan gave to two current
  // members deterministically stays with the smaller nodeId.
  const lists = sorted.map((member, index) => {
    const quota = quotas[index] ?? 0;
    const claimed = previous === undefined ? undefined : ownList(previous.owners, member.nodeId);
    const kept: number[] = [];
    for (const shard of validClaims(claimed ?? [], claimLimit)) {
      if (kept.length >= quota) break;
      if (taken[shard] === 1) continue;
      taken[shard] = 1;
      kept.push(shard);
    }
    return kept;
  });

  // Quotas sum to shardCount, so the free shards exactly cover the deficits and `cursor` never
  // runs past the end.
  let cursor = 0;
  for (const [index, list] of lists.entries()) {
    const quota = quotas[index] ?? 0;
    if (list.length === quota) continue;
    while (list.length < quota) {
      while (taken[cursor] === 1) cursor++;
      taken[cursor] = 1;
      list.push(cursor);
    }
    list.sort(compareNumbers);
  }

  return {
    totalShards: shardCount,
    owners: Object.fromEntries(sorted.map((member, index) => [member.nodeId, lists[index] ?? []])),
  };
}

/**
 * Hamilton apportionment: everyone gets floor(share), the leftover seats go to the largest fractional
 * parts, ties to the earlier member in `sorted` (i.e. the smaller nodeId). BigInt keeps
 * shardCount * capacity exact even for capacities near Number.MAX_SAFE_INTEGER, where floating-point
 * shares could round two remainders into a false tie and make the result depend on float quirks.
 */
function largestRemainderQuotas(sorted: readonly NormalizedMember[], shardCount: number): number[] {
  const total = BigInt(shardCount);
  const sum = sorted.reduce((acc, member) => acc + BigInt(member.capacity), 0n);
  const shares = sorted.map((member, index) => {
    const product = total * BigInt(member.capacity);
    return { index, floor: product / sum, remainder: product % sum };
  });
  const quotas = shares.map((share) => Number(share.floor));
  const leftover = shardCount - quotas.reduce((acc, quota) => acc + quota, 0);
  const byRemainder = [...shares].sort((a, b) =>
    a.remainder === b.remainder ? a.index - b.index : a.remainder > b.remainder ? -1 : 1,
  );
  for (const share of byRemainder.slice(0, leftover)) {
    quotas[share.index] = (quotas[share.index] ?? 0) + 1;
  }
  return quotas;
}

/** The usable shard ids of a previous owner list: integers in [0, limit), ascending, de-duplicated. */
function validClaims(claimed: readonly number[], limit: number): number[] {
  // `+ 0` turns -0 into 0 so a plan never contains -0, which Object.is and serializers tell apart.
  return ascendingUnique(
    claimed
      .filter((shard) => Number.isInteger(shard) && shard >= 0 && shard < limit)
      .map((shard) => shard + 0),
  );
}

function sortMembers(members: readonly MemberSpec[]): NormalizedMember[] {
  const sorted = members
    .map((member) => ({ nodeId: member.nodeId, capacity: normalizeCapacity(member.capacity) }))
    .sort((a, b) => compareIds(a.nodeId, b.nodeId));
  for (let i = 1; i < sorted.length; i++) {
    const nodeId = sorted[i]?.nodeId;
    if (nodeId === sorted[i - 1]?.nodeId) {
      // Silently merging would hide a membership bug and hand one worker two workers' shards.
      throw new RangeError(`duplicate member nodeId ${JSON.stringify(nodeId)}`);
    }
  }
  return sorted;
}

function normalizeCapacity(capacity: number): number {
  return Number.isFinite(capacity) && capacity >= 1 ? Math.floor(capacity) : 1;
}

/**
 * Own-property lookup: nodeIds are arbitrary strings, and "__proto__" or "toString" must not resolve
 * to Object.prototype members.
 */
function ownList(owners: Owners, nodeId: string): readonly number[] | undefined {
  return Object.hasOwn(owners, nodeId) ? owners[nodeId] : undefined;
}

/** shard -> owner, the smallest nodeId winning if a malformed plan lists a shard twice. */
function ownerByShard(owners: Owners, sortedNodeIds: readonly string[]): Map<number, string> {
  const result = new Map<number, string>();
  for (const nodeId of sortedNodeIds) {
    for (const shard of ownList(owners, nodeId) ?? []) {
      if (!result.has(shard)) result.set(shard, nodeId);
    }
  }
  return result;
}

/** Elements of `from` absent from `without`, ascending and de-duplicated. */
function setDifference(from: readonly number[], without: readonly number[]): number[] {
  const excluded = new Set(without);
  return ascendingUnique(from).filter((shard) => !excluded.has(shard));
}

function ascendingUnique(values: readonly number[]): number[] {
  return [...new Set(values)].sort(compareNumbers);
}

function listsEqual(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, index) => Object.is(value, b[index]));
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareNumbers(a: number, b: number): number {
  return a - b;
}

function assertNever(value: never): never {
  throw new TypeError(`unknown strategy ${JSON.stringify(value)}`);
}
