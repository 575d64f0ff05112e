import { describe, expect, it } from "vitest";
import { runDrill } from "./drill/drill.js";
import { postgresScenarios } from "./drill/scenarios-postgres.js";

// The dataset drill with the PostgreSQL source, in CI: workers read their shards from a real
// PostgreSQL through FetchShardData while the database goes down for 2 s; every item is
// processed, by one owner at a time. The other PostgreSQL drills: `pnpm drill postgres-...`.
describe("fault drill with the PostgreSQL source (CI subset)", () => {
  it("postgres-restart: no overlap, nothing lost", async () => {
    const scenario = postgresScenarios.find((s) => s.name === "postgres-restart");
    expect(scenario).toBeDefined();
    if (scenario === undefined) return;
    const r = await runDrill(scenario);
    expect(r.problems).toEqual([]);
    expect(r.overlaps).toBe(0);
    expect(r.lostItems).toBe(0);
    expect(r.passed).toBe(true);
  }, 120_000);
});
