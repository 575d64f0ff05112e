/**
 * node bench/dist/cli.js [heartbeat|tail|etcd-cost|failover|detection|churn|data|tasks|coldstart|tls ...] [--json] [--smoke]
 *
 * Prints the machine line first, then one table per measurement (or, with --json, one JSON
 * object per row). --smoke runs a reduced version of each (~30 s in all) so CI can check that
 * the benchmark still runs; it asserts nothing about timing.
 */
import { parseArgs } from "node:util";
import { benchChurn } from "./bench-churn.js";
import { benchColdStart } from "./bench-coldstart.js";
import { benchData } from "./bench-data.js";
import { benchDetection } from "./bench-detection.js";
import { benchEtcdCost } from "./bench-etcd-cost.js";
import { benchFailover } from "./bench-failover.js";
import { benchHeartbeat } from "./bench-heartbeat.js";
import { benchTail } from "./bench-tail.js";
import { benchTasks } from "./bench-tasks.js";
import { benchTls } from "./bench-tls.js";
import { describeMachine, machineLine } from "./machine.js";
import { Reporter } from "./report.js";

const benches: Record<string, (rep: Reporter, smoke: boolean) => Promise<void>> = {
  heartbeat: benchHeartbeat,
  tail: benchTail,
  "etcd-cost": benchEtcdCost,
  failover: benchFailover,
  detection: benchDetection,
  churn: benchChurn,
  data: benchData,
  tasks: benchTasks,
  coldstart: benchColdStart,
  tls: benchTls,
};

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { json: { type: "boolean", default: false }, smoke: { type: "boolean", default: false } },
});
const names = positionals.length === 0 ? Object.keys(benches) : positionals;
for (const n of names) {
  if (!(n in benches)) {
    process.stderr.write(
      `unknown benchmark ${JSON.stringify(n)}; known: ${Object.keys(benches).join(", ")}\n`,
    );
    process.exit(2);
  }
}

const machine = describeMachine();
const rep = new Reporter(values.json, machine);
if (values.json) process.stdout.write(`${JSON.stringify({ measurement: "machine", ...machine })}\n`);
else
  process.stdout.write(
    `${machineLine(machine)}\ncommand: node bench/dist/cli.js ${process.argv.slice(2).join(" ")}\n`,
  );

let failed = false;
for (const n of names) {
  const started = performance.now();
  try {
    await benches[n]?.(rep, values.smoke);
  } catch (e) {
    failed = true;
    process.stderr.write(`[bench] ${n} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  }
  rep.progress(`${n} took ${Math.round((performance.now() - started) / 1000)} s`);
}
// Children are tracked by the harness's registry and killed by its exit handler.
process.exit(failed ? 1 : 0);
