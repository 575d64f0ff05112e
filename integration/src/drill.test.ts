import { describe, expect, it } from "vitest";
import { runDrill } from "./drill/drill.js";
import { allScenarios as scenarios } from "./drill/scenarios.js";

// The fast subset of `pnpm drill` that CI runs; the full set is one command (docs/drills.md).
const ci = ["leader-kill", "worker-pause", "bad-input", "task-storm", "bad-credentials"];

describe("fault drills (CI subset)", () => {
  for (const name of ci) {
    it(`${name}: no overlap, nothing lost, precise answers`, async () => {
      const scenario = scenarios.find((s) => s.name === name);
      expect(scenario).toBeDefined();
      if (scenario === undefined) return;
      const r = await runDrill(scenario);
      expect(r.problems).toEqual([]);
      expect(r.overlaps).toBe(0);
      expect(r.lostItems).toBe(0);
      expect(r.staleLeaderWrites).toBe(0);
      expect(r.passed).toBe(true);
    }, 120_000);
  }
});
