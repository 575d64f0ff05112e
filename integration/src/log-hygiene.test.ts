import { describe, expect, it } from "vitest";
import { assignmentOf, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

/** Top-level keys that occur more than once in one JSON object's text. */
function duplicateKeys(json: string): string[] {
  const seen = new Set<string>();
  const dups: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === "{" || ch === "[") depth += 1;
    else if (ch === "}" || ch === "]") depth -= 1;
    else if (ch === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      const text = json.slice(i + 1, j);
      // A key: a string at depth 1 followed by a colon.
      if (depth === 1 && json[j + 1] === ":") {
        if (seen.has(text)) dups.push(text);
        seen.add(text);
      }
      i = j;
    }
  }
  return dups;
}

// What an operator reads in the logs of a normal day: three replicas start, a worker joins,
// runs, leaves, and every replica stops gracefully (the leader last). Nothing in it may be
// a warning, and every line says the role the replica had when it wrote it.
const env = useTestEnv(3);

describe("replica logs of a normal lifecycle", () => {
  it("hold no warning or error, and each line names the role of its moment", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    for (const r of c.replicas) await r.waitForLog((l) => l.event === "http_listening");
    const w = await startWorker(env, c, "w-1");
    await until(
      () => assignmentOf(env, c),
      (a) => a?.phase === "active" && (a.owners["w-1"]?.length ?? 0) > 0,
    );
    // A follower's /status names the epoch of the leader it knows, not 0.
    const epoch = (await leader.status()).leaderEpoch;
    expect(epoch).toBeGreaterThan(0);
    for (const r of c.replicas) expect((await r.status()).leaderEpoch).toBe(epoch);
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
    // The leader's lines from its "elected" line to its "leadership_resigned" line say leader,
    // with the epoch it won.
    const own = lines.filter((l) => l.replica === leader.id);
    const elected = own.filter((l) => l.event === "elected");
    expect(elected.map((l) => [l.role, l.leaderEpoch, l.epoch])).toEqual([["leader", epoch, epoch]]);
    const from = own.findIndex((l) => l.event === "elected");
    const to = own.findIndex((l) => l.event === "leadership_resigned");
    expect(from).toBeGreaterThanOrEqual(0);
    expect(to).toBeGreaterThan(from);
    for (const l of own.slice(from, to))
      if (l.role !== undefined) expect(l.role, JSON.stringify(l)).toBe("leader");
    // Only the process's own lines (the command around the replica) carry no role.
    const roleless = new Set(lines.filter((l) => l.role === undefined).map((l) => String(l.event)));
    for (const e of roleless) expect(["replica_starting", "signal", "http_listening"]).toContain(e);
    for (const l of lines) if (l.replica !== leader.id) expect(l.role, JSON.stringify(l)).not.toBe("leader");
    // Every line carries one time field in one format, ISO 8601 in UTC (the SDK's too).
    for (const l of lines)
      expect(String(l.time), JSON.stringify(l)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(lines.some((l) => l.event === "leadership_resigned" && l.replica === leader.id)).toBe(true);
    expect(c.replicas.every((r) => r.stderr.length === 0)).toBe(true);
    // No key twice in a line (JSON.parse keeps the last one silently).
    for (const r of c.replicas) for (const raw of r.rawLogs) expect(duplicateKeys(raw), raw).toEqual([]);
  });
});
