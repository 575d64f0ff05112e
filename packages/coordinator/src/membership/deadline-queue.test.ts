import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DeadlineQueue } from "./deadline-queue.js";
import { Debounce } from "./debounce.js";

describe("DeadlineQueue", () => {
  it("hands back due keys earliest first, once", () => {
    const q = new DeadlineQueue<string>();
    q.schedule("a", 30);
    q.schedule("b", 10);
    q.schedule("c", 20);
    expect(q.due(5)).toEqual([]);
    expect(q.due(25)).toEqual(["b", "c"]);
    expect(q.due(25)).toEqual([]);
    expect(q.peek()).toBe(30);
    expect(q.size).toBe(1);
  });

  it("a reschedule replaces the deadline, earlier or later; cancel removes it", () => {
    const q = new DeadlineQueue<string>();
    q.schedule("a", 10);
    q.schedule("a", 50);
    expect(q.due(20)).toEqual([]);
    q.schedule("a", 5);
    expect(q.due(6)).toEqual(["a"]);
    q.schedule("b", 1);
    q.cancel("b");
    expect(q.due(100)).toEqual([]);
    expect(q.peek()).toBeUndefined();
  });

  it("matches a plain map model under any sequence of operations (property)", () => {
    type Op = { k: "s"; key: number; at: number } | { k: "c"; key: number } | { k: "d"; now: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        k: fc.constant("s" as const),
        key: fc.integer({ min: 0, max: 20 }),
        at: fc.integer({ min: 0, max: 1000 }),
      }),
      fc.record({ k: fc.constant("c" as const), key: fc.integer({ min: 0, max: 20 }) }),
      fc.record({ k: fc.constant("d" as const), now: fc.integer({ min: 0, max: 1000 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const q = new DeadlineQueue<number>();
        const model = new Map<number, number>();
        for (const o of ops) {
          if (o.k === "s") {
            q.schedule(o.key, o.at);
            model.set(o.key, o.at);
          } else if (o.k === "c") {
            q.cancel(o.key);
            model.delete(o.key);
          } else {
            const got = q.due(o.now);
            const want = [...model]
              .filter(([, at]) => at <= o.now)
              .sort((a, b) => a[1] - b[1])
              .map(([key]) => key);
            // Order among equal deadlines is unspecified: compare deadlines in order and the key sets.
            expect(got.map((k) => model.get(k))).toEqual(want.map((k) => model.get(k)));
            expect(new Set(got)).toEqual(new Set(want));
            for (const k of got) model.delete(k);
          }
          expect(q.size).toBe(model.size);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("Debounce", () => {
  it("restarts the quiet period on each change", () => {
    const d = new Debounce(100, 500);
    expect(d.change(0, "join")).toBe(100);
    expect(d.change(50, "join")).toBe(150);
    expect(d.isDue(149)).toBe(false);
    expect(d.isDue(150)).toBe(true);
    expect(d.take()).toEqual(["join"]);
    expect(d.dueAt).toBeUndefined();
  });

  it("is due at most maxDelay after the first change, however many follow (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2000 }),
        fc.integer({ min: 0, max: 5000 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 100 }),
        (delay, extra, gaps) => {
          const d = new Debounce(delay, delay + extra);
          let now = 0;
          let first: number | undefined;
          for (const gap of gaps) {
            now += gap;
            first ??= now;
            const due = d.change(now, "x");
            expect(due).toBeLessThanOrEqual(first + delay + extra);
            // Never earlier than now, unless the bound itself has already passed.
            expect(due >= now || due === first + delay + extra).toBe(true);
            expect(due).toBeLessThanOrEqual(now + delay);
          }
        },
      ),
    );
  });

  it("rejects a max delay below the delay", () => {
    expect(() => new Debounce(100, 50)).toThrow(RangeError);
  });
});
