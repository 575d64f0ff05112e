import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { TaskRecord } from "./task-record.js";
import { formatCursor, parseCursor, TaskChangeLog, WatchOverflow } from "./task-watch-log.js";

const view = (id: string) => ({ record: { id } as TaskRecord, progress: undefined });

describe("TaskChangeLog", () => {
  it("replays exactly the changes after a cursor the backlog still holds, else says it cannot", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 8 }),
        fc.integer({ min: 0, max: 30 }),
        fc.nat(),
        (backlog, n, pick) => {
          const log = new TaskChangeLog({ epoch: 2, backlog, bufferLimit: 100 });
          const cursors = [log.cursor];
          for (let i = 1; i <= n; i++) {
            log.append(view(`t${i}`), i);
            cursors.push(log.cursor);
          }
          const s = pick % (n + 1);
          const got = log.since(cursors[s] ?? log.cursor, () => true);
          if (s >= n - backlog)
            expect(got?.map((v) => v.record.id)).toEqual(
              Array.from({ length: n - s }, (_, i) => `t${s + i + 1}`),
            );
          else expect(got).toBeUndefined();
          expect(log.since({ epoch: 1, seq: s, rev: 0 }, () => true)).toBeUndefined();
          expect(log.since({ epoch: 2, seq: n + 1, rev: 0 }, () => true)).toBeUndefined();
        },
      ),
    );
  });

  it("round-trips cursors and rejects anything else", () => {
    const c = { epoch: 7, seq: 12, rev: 99 };
    expect(parseCursor(formatCursor(c))).toEqual(c);
    for (const bad of ["", "1.2", "a.b.c", "1.2.3.4", "-1.2.3", "99999999999999999.1.1"])
      expect(parseCursor(bad)).toBeUndefined();
  });

  it("feeds a subscriber the changes that pass its filter, and ends one that falls behind", async () => {
    const log = new TaskChangeLog({ epoch: 1, backlog: 10, bufferLimit: 2 });
    const signal = new AbortController().signal;
    const some = log.subscribe((id) => id !== "skip");
    log.append(view("a"), 1);
    log.append(view("skip"), 2);
    const b = await some.next(signal);
    expect(b?.views.map((v) => v.record.id)).toEqual(["a"]);
    expect(b?.cursor.seq).toBe(1);
    for (const id of ["x", "y", "z"]) log.append(view(id), 3);
    await expect(some.next(signal)).rejects.toBeInstanceOf(WatchOverflow);
    const other = log.subscribe(() => true);
    log.close();
    expect(await other.next(signal)).toBeUndefined();
  });

  it("resolves a waiting subscriber with undefined when its signal aborts", async () => {
    const log = new TaskChangeLog({ epoch: 1, backlog: 10, bufferLimit: 10 });
    const ac = new AbortController();
    const sub = log.subscribe(() => true);
    const p = sub.next(ac.signal);
    ac.abort();
    expect(await p).toBeUndefined();
    sub.close();
  });
});
