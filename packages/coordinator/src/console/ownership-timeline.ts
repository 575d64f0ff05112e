import type { TimelineSegment } from "./console-view.js";

/**
 * Who ran each shard of each group over the last `windowMs`, as segments of one owner (or
 * `null`, a gap: the shard is being handed off). Fed once per console tick with the owners
 * at that moment; consecutive equal owners extend one segment, so a steady group costs one
 * segment per shard however long it runs.
 *
 * A follower records the timelines it relays too (see {@link OwnershipTimeline.adopt}), so
 * that when it becomes leader the history survives the failover.
 */
export class OwnershipTimeline {
  readonly windowMs: number;
  readonly #groups = new Map<string, TimelineSegment[][]>();

  constructor(windowMs: number) {
    this.windowMs = windowMs;
  }

  /** Records the owner of every shard of `group` at `at` (epoch ms); returns the group's timeline. */
  record(
    group: string,
    owners: readonly (string | null)[],
    at: number,
  ): readonly (readonly TimelineSegment[])[] {
    const old = this.#groups.get(group) ?? [];
    const recent = (segs: readonly TimelineSegment[] | undefined) =>
      (segs ?? []).filter((s) => s.to >= at - this.windowMs);
    const next: TimelineSegment[][] = owners.map((owner, shard) => {
      const segs = recent(old[shard]);
      const last = segs.at(-1);
      if (last !== undefined && last.owner === owner) segs[segs.length - 1] = { ...last, to: at };
      else segs.push({ owner, from: last?.to ?? at, to: at });
      return segs;
    });
    // Shards the group no longer has (a modulo group shrank) keep their past until it ages out.
    for (let shard = owners.length; shard < old.length; shard++) next.push(recent(old[shard]));
    while (next.length > owners.length && next.at(-1)?.length === 0) next.pop();
    this.#groups.set(group, next);
    return next;
  }

  /**
   * Takes over a timeline built elsewhere (the leader's, relayed by this follower) and
   * returns it merged with what this replica already had before it: a leader elected
   * moments ago knows only its own seconds, the follower relaying it remembers the minutes
   * before. Per shard, this replica's segments up to the first relayed one are kept; when
   * the last of them and the first relayed one name the same owner, they become one segment
   * across the stretch between (a failover: no leader could move the shard meanwhile, as
   * only a leader writes versions); with different owners that stretch stays unrecorded.
   */
  adopt(
    group: string,
    timeline: readonly (readonly TimelineSegment[])[],
    at: number,
  ): readonly (readonly TimelineSegment[])[] {
    const own = this.#groups.get(group) ?? [];
    const merged: TimelineSegment[][] = timeline.map((segs, shard) => {
      const first = segs[0]?.from ?? at;
      const older = (own[shard] ?? [])
        .filter((s) => s.from < first && s.to >= at - this.windowMs)
        .map((s) => (s.to > first ? { ...s, to: first } : { ...s }));
      const relayed = segs.map((s) => ({ ...s }));
      const tail = older.at(-1);
      const head = relayed[0];
      if (tail !== undefined && head !== undefined && tail.owner === head.owner) {
        older[older.length - 1] = { ...tail, to: head.to };
        relayed.shift();
      }
      return [...older, ...relayed];
    });
    this.#groups.set(group, merged);
    return merged;
  }

  /** Forgets the groups not named (deleted groups). */
  retain(groups: ReadonlySet<string>): void {
    for (const g of this.#groups.keys()) if (!groups.has(g)) this.#groups.delete(g);
  }
}
