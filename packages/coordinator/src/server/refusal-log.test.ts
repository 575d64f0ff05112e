import { describe, expect, it } from "vitest";
import { RefusalLog } from "./refusal-log.js";
import { UnaryLimiter } from "./unary-limiter.js";

function capture() {
  const lines: { level: string; entry: Record<string, unknown> }[] = [];
  const log = {
    info: (entry: Record<string, unknown>) => lines.push({ level: "info", entry }),
    debug: (entry: Record<string, unknown>) => lines.push({ level: "debug", entry }),
  };
  return { lines, log: log as unknown as import("pino").Logger };
}

describe("RefusalLog", () => {
  it("logs a refusal at info once per window, repeats at debug, then their count", () => {
    const { lines, log } = capture();
    const r = new RefusalLog(log, 1000);
    const e = { event: "stream_closed", code: "ALREADY_EXISTS", group: "g", node: "n" };
    for (let t = 0; t < 10; t++) r.refused(e, t * 10);
    expect(lines.filter((l) => l.level === "info")).toHaveLength(1);
    expect(lines.filter((l) => l.level === "debug")).toHaveLength(9);
    r.refused(e, 2000);
    const summary = lines.find((l) => l.entry.event === "refusals_repeated");
    expect(summary?.entry.count).toBe(9);
    // Another node's refusal is its own kind.
    r.refused({ ...e, node: "m" }, 2001);
    expect(lines.at(-1)?.level).toBe("info");
  });
});

describe("UnaryLimiter", () => {
  it("limits per node and per replica", () => {
    const l = new UnaryLimiter(100, 5, 0);
    let refused = 0;
    for (let i = 0; i < 20; i++) if (l.take("g", "a", 0) !== undefined) refused++;
    expect(refused).toBe(10); // burst of twice the rate
    // Another node still gets through: the replica's budget is larger.
    expect(l.take("g", "b", 0)).toBeUndefined();
    // Refills with time.
    expect(l.take("g", "a", 1000)).toBeUndefined();
  });
});
