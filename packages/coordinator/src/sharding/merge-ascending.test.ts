import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { mergeAscending } from "./merge-ascending.js";

/** An async source over `items` that records how far it was pulled and whether it was closed. */
function source(items: readonly number[]) {
  const state = { pulled: 0, closed: false };
  async function* gen() {
    try {
      for (const x of items) {
        await Promise.resolve();
        state.pulled += 1;
        yield x;
      }
    } finally {
      state.closed = true;
    }
  }
  return { iterable: gen(), state };
}

const sortedArrays = fc.array(
  fc.array(fc.integer({ min: -50, max: 50 })).map((a) => a.sort((x, y) => x - y)),
  { maxLength: 30 },
);

describe("mergeAscending", () => {
  it("yields every item of every source, ascending", async () => {
    await fc.assert(
      fc.asyncProperty(sortedArrays, fc.integer({ min: 1, max: 40 }), async (arrays, concurrency) => {
        const out: number[] = [];
        for await (const x of mergeAscending(
          arrays.map((a) => source(a).iterable),
          (a, b) => a - b,
          { concurrency },
        ))
          out.push(x);
        expect(out).toEqual(arrays.flat().sort((a, b) => a - b));
      }),
    );
  });

  it("pulls each source at most one item ahead of what it yielded, and closes every source on return", async () => {
    await fc.assert(
      fc.asyncProperty(sortedArrays, fc.nat({ max: 50 }), async (arrays, take) => {
        const sources = arrays.map(source);
        const yielded: number[] = [];
        for await (const x of mergeAscending(
          sources.map((s) => s.iterable),
          (a, b) => a - b,
        )) {
          yielded.push(x);
          const pulled = sources.reduce((n, s) => n + s.state.pulled, 0);
          expect(pulled - yielded.length).toBeLessThanOrEqual(sources.length);
          if (yielded.length >= take) break;
        }
        for (const s of sources) expect(s.state.closed).toBe(true);
      }),
    );
  });

  it("closes the other sources when one fails", async () => {
    const good = source([1, 2, 3]);
    async function* bad() {
      yield 0;
      throw new Error("boom");
    }
    const run = async () => {
      for await (const _ of mergeAscending([good.iterable, bad()], (a, b) => a - b)) {
        // drain
      }
    };
    await expect(run()).rejects.toThrow("boom");
    expect(good.state.closed).toBe(true);
  });
});
