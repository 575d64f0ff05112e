import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { startCluster, startWorker } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// The alert rules checked by Prometheus' own promtool (Debian's prometheus package, installed
// by scripts/setup.sh: this test fails, it does not skip, when promtool is missing), and every
// metric they name checked against what a live replica really exports.
const env = useTestEnv(1);
const run = promisify(execFile);
const dir = fileURLToPath(new URL("../../deploy/prometheus/", import.meta.url));
const promtool = process.env.PROMTOOL ?? "promtool";

/** Metric names a text exposition declares (with the series names a histogram adds). */
function exportedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    const m = /^# TYPE (\S+) (\S+)/.exec(line);
    if (m?.[1] === undefined) continue;
    out.add(m[1]);
    if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) out.add(`${m[1]}${s}`);
  }
  return out;
}

describe("Prometheus alert rules", () => {
  it("promtool check rules and promtool test rules pass", async () => {
    const check = await run(promtool, ["check", "rules", "alerts.yml"], { cwd: dir });
    expect(check.stdout).toContain("SUCCESS: 11 rules found");
    const test = await run(promtool, ["test", "rules", "alerts.test.yml"], { cwd: dir });
    expect(test.stdout).toContain("SUCCESS");
  });

  it("every metric the rules and the Grafana dashboard name is exported by a live leader", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    await startWorker(env, c, "w-a");
    const rules = await readFile(`${dir}alerts.yml`, "utf8");
    const used = [...new Set(rules.match(/\bshard_[a-z0-9_]+/g) ?? [])].sort();
    expect(used.length).toBeGreaterThan(8);
    // Every query of every panel of the dashboard: its metric names (shard_ and process_).
    const dashboard = JSON.parse(await readFile(`${dir}../grafana/coordinator.json`, "utf8")) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(15);
    const dashboardNames = [
      ...new Set(exprs.flatMap((e) => e.match(/\b(?:shard|process)_[a-z0-9_]+/g) ?? [])),
    ];
    for (const e of exprs) expect(e, "a query without a metric of ours").toMatch(/\b(?:shard|process)_/);
    const text = await (await fetch(`${leader.httpUrl}/metrics`)).text();
    const names = exportedNames(text);
    expect(used.filter((n) => !names.has(n))).toEqual([]);
    expect(dashboardNames.filter((n) => !names.has(n))).toEqual([]);
    // Our names follow Prometheus' conventions as its own linter reads them (`_total` on
    // counters and only there, base units, snake case); prom-client's default process and
    // Node.js metrics are not ours to rename and are left out.
    const lint = await new Promise<string>((resolve, reject) => {
      const child = execFile(promtool, ["check", "metrics"], (e, stdout, stderr) =>
        // promtool exits 3 when it finds problems: they are what we read.
        e !== null && e.code !== 3 ? reject(e) : resolve(`${stdout}${stderr}`),
      );
      child.stdin?.end(text);
    });
    const ours = lint.split("\n").filter((l) => /\bshard_/.test(l));
    expect(ours).toEqual([]);
    // The replica label every rule's `by (replica)` relies on.
    expect(text).toMatch(/shard_replica_is_leader\{replica="rm-\d"\} 1/);
  });
});
