import { shardOf } from "@org/proto";

/**
 * The ownership timeline of a drill and the invariants checked on it (pure).
 *
 * Every worker process prints one JSON line per event with a wall-clock `t` (ms) taken on
 * this machine, so all workers share one clock. A worker's *stint* on a shard is the span
 * from its `shard_started` to its `shard_stopped`/`fenced`/last event; its *processing span*
 * is from the stint's start to the last item it processed in that stint: the part of a
 * stint that can conflict with someone else (a SIGSTOPped worker holds a stint but
 * processes nothing while paused).
 *
 * Several processes may run one after another with one node id (a restarted or
 * crash-looping worker): their lines carry an `incarnation`, and each process is a timeline
 * of its own, so two incarnations of one node processing the same items at once is caught.
 */

/** One line a worker printed (see examples/src/dataset-job.ts). */
export interface WorkerEvent {
  readonly t: number;
  readonly node: string;
  readonly event: string;
  readonly shard?: number;
  readonly totalShards?: number;
  readonly version?: number;
  readonly id?: string;
  /** Which process of this node id printed it (1, 2, ...), when a node id ran more than once. */
  readonly incarnation?: number;
}

/** A shard's identity: its id means the same data only for the same shard count. */
export type ShardKey = `${number}/${number}`;
const keyOf = (shard: number, totalShards: number): ShardKey => `${totalShards}/${shard}`;

export interface Span {
  readonly node: string;
  /** The process of `node` (see {@link WorkerEvent.incarnation}). */
  readonly incarnation?: number;
  readonly key: ShardKey;
  readonly start: number;
  /** End of the stint (stop, fence, or the worker's last event). */
  readonly end: number;
  /** Last processed item in the stint, or the start when none. */
  readonly lastProcessed: number;
  readonly items: number;
  /**
   * Until when the stint certainly owned its shard: its stop when it stopped cleanly;
   * otherwise (fenced, killed, exited) its last processed item, because a paused or dead
   * worker's stint stays open on paper while nobody processes anything.
   */
  readonly ownedUntil: number;
}

/** Identifies the process that printed an event: its node id, and its incarnation if any. */
export function processOf(e: { readonly node: string; readonly incarnation?: number }): string {
  return e.incarnation === undefined ? e.node : `${e.node}#${e.incarnation}`;
}

/** Builds every worker process's stints from its events (in time order per process). */
export function spans(events: readonly WorkerEvent[]): Span[] {
  const byProcess = new Map<string, WorkerEvent[]>();
  for (const e of events) {
    const p = processOf(e);
    let list = byProcess.get(p);
    if (list === undefined) {
      list = [];
      byProcess.set(p, list);
    }
    list.push(e);
  }
  const out: Span[] = [];
  for (const list of byProcess.values()) {
    list.sort((a, b) => a.t - b.t);
    const node = list[0]?.node ?? "";
    const incarnation = list[0]?.incarnation;
    const who = incarnation === undefined ? { node } : { node, incarnation };
    const open = new Map<ShardKey, { start: number; lastProcessed: number; items: number }>();
    // A stint that did not stop cleanly (fenced, killed, paused) counts as owned only until
    // its last processed item: a paused worker reports `fenced` only after it resumes, with
    // other events before it, so nothing later is a trustworthy sign it still owned the shard.
    // For an idle owner this overstates the gap: an upper bound.
    const close = (key: ShardKey, end: number, clean = false) => {
      const s = open.get(key);
      if (s === undefined) return;
      const ownedUntil = clean ? end : s.lastProcessed;
      out.push({
        ...who,
        key,
        start: s.start,
        end,
        lastProcessed: s.lastProcessed,
        items: s.items,
        ownedUntil,
      });
      open.delete(key);
    };
    for (const e of list) {
      if (e.shard === undefined || e.totalShards === undefined) {
        if (e.event === "fenced" || e.event === "closed")
          for (const k of [...open.keys()]) close(k, e.t, e.event === "closed");
        continue;
      }
      const key = keyOf(e.shard, e.totalShards);
      if (e.event === "shard_started") {
        close(key, e.t);
        open.set(key, { start: e.t, lastProcessed: e.t, items: 0 });
      } else if (e.event === "shard_stopped") {
        close(key, e.t, true);
      } else if (e.event === "processed") {
        const s = open.get(key);
        if (s !== undefined) {
          s.lastProcessed = e.t;
          s.items += 1;
        } else {
          // Processing outside any stint is itself a violation; record it as a zero-length span.
          out.push({ ...who, key, start: e.t, end: e.t, lastProcessed: e.t, items: 1, ownedUntil: e.t });
        }
      }
    }
    // Still open at the end: a live worker (owned to its last event) or a killed one (to its
    // last sign of life, which is its last event too).
    const last = list.at(-1)?.t ?? 0;
    for (const k of [...open.keys()]) close(k, last, true);
  }
  return out;
}

/** I1: two processing spans of different worker processes that intersect in time and in data. */
export interface Overlap {
  /** A dataset item both spans' shards contain (the first in dataset order). */
  readonly item: string;
  readonly a: Span;
  readonly b: Span;
}

/**
 * I1, the overlap check: two processing spans of different processes overlap when their
 * processing windows `[start, lastProcessed]` intersect and some dataset item belongs to
 * both spans' `(totalShards, shard)` (an item belongs to (T, s) when `shardOf(id, T) == s`).
 * Comparing items rather than shard numbers is what catches an overlap across a `modulo`
 * reshape, where shard 1 of 3 and shard 0 of 2 share every sixth item.
 */
export function overlaps(all: readonly Span[], dataset: readonly string[]): Overlap[] {
  const members = new Map<ShardKey, Set<string>>();
  const itemsOf = (key: ShardKey): Set<string> => {
    let set = members.get(key);
    if (set === undefined) {
      const [total, shard] = key.split("/").map(Number);
      set = new Set(dataset.filter((id) => shardOf(id, total ?? 0) === shard));
      members.set(key, set);
    }
    return set;
  };
  const common = new Map<string, string | undefined>();
  const shared = (a: ShardKey, b: ShardKey): string | undefined => {
    const pair = a < b ? `${a}|${b}` : `${b}|${a}`;
    if (!common.has(pair)) {
      const x = itemsOf(a);
      const y = itemsOf(b);
      common.set(
        pair,
        dataset.find((id) => x.has(id) && y.has(id)),
      );
    }
    return common.get(pair);
  };
  const out: Overlap[] = [];
  // Spans with no item cannot conflict; sorting by start lets the scan stop early.
  const busy = all.filter((s) => s.items > 0).sort((p, q) => p.start - q.start);
  for (let i = 0; i < busy.length; i++) {
    const a = busy[i];
    if (a === undefined) continue;
    for (let j = i + 1; j < busy.length; j++) {
      const b = busy[j];
      if (b === undefined || b.start > a.lastProcessed) break;
      if (processOf(a) === processOf(b)) continue;
      const item = shared(a.key, b.key);
      if (item !== undefined) out.push({ item, a, b });
    }
  }
  return out;
}

/** Who processed an item when: the node id, which process of it, and the time. */
export interface ProcessedBy {
  readonly node: string;
  readonly incarnation?: number;
  readonly t: number;
}

/** I2: items never processed, and items processed more than once (with who and when, in time order). */
export function itemAccounting(
  events: readonly WorkerEvent[],
  dataset: readonly string[],
): { lost: string[]; duplicates: { id: string; by: ProcessedBy[] }[] } {
  const seen = new Map<string, ProcessedBy[]>();
  for (const e of events) {
    if (e.event !== "processed" || e.id === undefined) continue;
    const list = seen.get(e.id) ?? [];
    list.push(
      e.incarnation === undefined
        ? { node: e.node, t: e.t }
        : { node: e.node, incarnation: e.incarnation, t: e.t },
    );
    seen.set(e.id, list);
  }
  const lost = dataset.filter((id) => !seen.has(id));
  // Events arrive grouped per process, not in time order: `by[0]` must be the first in time.
  const duplicates = [...seen.entries()]
    .filter(([, by]) => by.length > 1)
    .map(([id, by]) => ({ id, by: by.sort((x, y) => x.t - y.t) }));
  return { lost, duplicates };
}

/**
 * I5, the handoff gap: the longest time any item of the dataset had no owner, between its
 * first owner and its last, counting gaps that end after `from`. Measured per item (an item
 * belongs to stint (T, s) when `shardOf(id, T) == s`), so it also covers `modulo` reshapes,
 * where every shard changes meaning, and a leaver whose shard waits for the rebalance delay.
 */
export function maxHandoffGapMs(
  all: readonly Span[],
  dataset: readonly string[],
  from = Number.NEGATIVE_INFINITY,
): number {
  let max = 0;
  const parsed = all.map((s) => {
    const [total, shard] = s.key.split("/").map(Number);
    return { s, total: total ?? 0, shard: shard ?? -1 };
  });
  for (const id of dataset) {
    const covering = parsed
      .filter(({ total, shard }) => shardOf(id, total) === shard)
      .map(({ s }) => s)
      .sort((a, b) => a.start - b.start);
    let coveredUntil = covering[0]?.ownedUntil ?? 0;
    for (const s of covering.slice(1)) {
      if (s.start > coveredUntil && s.start >= from) max = Math.max(max, s.start - coveredUntil);
      coveredUntil = Math.max(coveredUntil, s.ownedUntil);
    }
  }
  return Math.round(max);
}

/** One write or delete seen by the etcd recorder. */
export interface EtcdEvent {
  readonly at: number;
  readonly type: "put" | "delete";
  readonly key: string;
  readonly modRevision: number;
  readonly createRevision: number;
  readonly value: string;
}

/**
 * I4: every assignment write must come from the leader of that moment: the writer's epoch
 * (`leaderEpoch` in the record) must be the create revision of the election key that was
 * the oldest live candidate at the write's revision.
 */
export function staleLeaderWrites(
  events: readonly EtcdEvent[],
  electionPrefix: string,
  assignmentSuffix = "/assignment",
): EtcdEvent[] {
  const live = new Map<string, number>(); // election key -> create revision
  const bad: EtcdEvent[] = [];
  for (const e of [...events].sort((a, b) => a.modRevision - b.modRevision)) {
    if (e.key.startsWith(electionPrefix)) {
      if (e.type === "put") live.set(e.key, e.createRevision);
      else live.delete(e.key);
      continue;
    }
    if (e.type !== "put" || !e.key.endsWith(assignmentSuffix)) continue;
    let epoch: number | undefined;
    try {
      epoch = (JSON.parse(e.value) as { leaderEpoch?: number }).leaderEpoch;
    } catch {
      epoch = undefined;
    }
    const leaderEpoch = Math.min(...live.values());
    if (epoch === undefined || epoch !== leaderEpoch) bad.push(e);
  }
  return bad;
}
