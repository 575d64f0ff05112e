import { describe, expect, it } from "vitest";
import { assignmentOf, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// What an operator reads in the logs of a normal day: three replicas start, a worker joins,
// runs, leaves, and every replica stops gracefully (the leader last). Nothing in it may be
// a warning, and every line says the role the replica had when it wrote it.
const env = useTestEnv(3);

describe("replica logs of a normal lifecycle", () => {
  it("hold no warning or error, and each line names the role of its moment", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = await startWorker(env, c, "w-1");
    await until(
      () => assignmentOf(env, c),
      (a) => a?.phase === "active" && (a.owners["w-1"]?.length ?? 0) > 0,
    );
    await w.close();
    await until(
      () => assignmentOf(env, c),
      (a) => a !== null && a.owners["w-1"] === undefined,
    );
    for (const r of c.replicas) if (r !== leader) expect(await r.stop()).toBe(0);
    expect(await leader.stop()).toBe(0);

    const lines = c.replicas.flatMap((r) =>
      r.logs.map((l): Record<string, unknown> => ({ ...(l as Record<string, unknown>), replica: r.id })),
    );
    const warnings = lines.filter((l) => typeof l.level === "number" && l.level >= 40);
    expect(warnings).toEqual([]);
    // The leader's lines while it led say so; nobody else's do.
    const leading = lines.filter((l) => l.event === "leading");
    expect(leading.map((l) => [l.replica, l.role])).toEqual([[leader.id, "leader"]]);
    for (const l of lines) if (l.replica !== leader.id) expect(l.role, JSON.stringify(l)).not.toBe("leader");
    // Every line carries one time field in one format, ISO 8601 in UTC (the SDK's too).
    for (const l of lines)
      expect(String(l.time), JSON.stringify(l)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(lines.some((l) => l.event === "leadership_resigned" && l.replica === leader.id)).toBe(true);
    expect(c.replicas.every((r) => r.stderr.length === 0)).toBe(true);
  });
});
