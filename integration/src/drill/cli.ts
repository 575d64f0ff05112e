#!/usr/bin/env node
// pnpm drill [scenario...] [--json] [--list] [--artifacts <dir>]
//   Runs fault drills against real etcd, replica and worker processes and checks the
//   ownership timeline (see docs/drills.md). Exit code 1 when any scenario fails.
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { type DrillReport, defaultDrillOptions, runDrill } from "./drill.js";
import { allScenarios as scenarios } from "./scenarios.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    json: { type: "boolean", default: false },
    list: { type: "boolean", default: false },
    // Keep each run's worker events, replica logs and etcd writes under this directory.
    artifacts: { type: "string" },
  },
});
if (values.list) {
  for (const s of scenarios) process.stdout.write(`${s.name.padEnd(24)} ${s.description}\n`);
  process.exit(0);
}
const unknown = positionals.filter((p) => !scenarios.some((s) => s.name === p));
if (unknown.length > 0) {
  process.stderr.write(`drill: unknown scenario ${unknown.join(", ")} (see --list)\n`);
  process.exit(2);
}
const chosen = positionals.length === 0 ? scenarios : scenarios.filter((s) => positionals.includes(s.name));
if (!values.json) {
  process.stdout.write(
    `machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}\n`,
  );
  process.stdout.write(
    `workers ${defaultDrillOptions.workers}, items ${defaultDrillOptions.items}, ${defaultDrillOptions.itemMs} ms/item\n`,
  );
}
const reports: DrillReport[] = [];
for (const s of chosen) {
  const r = await runDrill(s, { ...defaultDrillOptions, artifactsDir: values.artifacts }).catch(
    (e: unknown): DrillReport => ({
      scenario: s.name,
      passed: false,
      overlaps: -1,
      lostItems: -1,
      duplicateItems: -1,
      unexplainedDuplicates: -1,
      maxHandoffGapMs: -1,
      failoverMs: null,
      detectionMs: null,
      versionBumps: -1,
      staleLeaderWrites: -1,
      durationMs: 0,
      network: s.options?.network ?? "loopback",
      problems: [`drill crashed: ${e instanceof Error ? e.message : String(e)}`],
    }),
  );
  reports.push(r);
  if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else
    process.stdout.write(
      `${r.passed ? "PASS" : "FAIL"} ${r.scenario} (${Math.round(r.durationMs / 1000)} s)${r.problems.map((p) => `\n     ${p}`).join("")}\n`,
    );
}
if (!values.json) {
  const cols = [
    "scenario",
    "passed",
    "overlaps",
    "lostItems",
    "duplicateItems",
    "maxHandoffGapMs",
    "failoverMs",
    "detectionMs",
    "versionBumps",
  ] as const;
  process.stdout.write(`\n| ${cols.join(" | ")} |\n|${cols.map(() => " --- ").join("|")}|\n`);
  for (const r of reports) process.stdout.write(`| ${cols.map((c) => String(r[c] ?? "-")).join(" | ")} |\n`);
}
process.exit(reports.every((r) => r.passed) ? 0 : 1);
