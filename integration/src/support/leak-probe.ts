#!/usr/bin/env node
// Lifecycle probe, run as its own process by lifecycle.test.ts: starts a replica or a worker,
// uses it, closes it, then reports what is still keeping the event loop alive. A clean
// close() leaves nothing, so the process then exits by itself without process.exit().
//   node leak-probe.js replica <etcd-endpoints>
//   node leak-probe.js worker <coordinator-address>
import { createLogger, Replica, resolveReplicaOptions } from "@org/coordinator";
import { connectWorker } from "@org/worker-sdk";

const [kind, target] = process.argv.slice(2);
const report = (phase: string) =>
  process.stdout.write(
    `${JSON.stringify({ phase, resources: process.getActiveResourcesInfo().filter((r) => r !== "TTYWrap") })}\n`,
  );

if (kind === "replica") {
  const options = resolveReplicaOptions({
    etcdEndpoints: target,
    listen: "127.0.0.1:0",
    id: "probe",
    namespace: `/probe-${process.pid}`,
  });
  const replica = await Replica.start(options, createLogger("probe", "silent"));
  for (let i = 0; i < 100 && replica.role !== "leader"; i++) await new Promise((r) => setTimeout(r, 50));
  report(`running:${replica.role}`);
  await replica.close();
  await replica.close(); // idempotent
} else if (kind === "worker") {
  const worker = await connectWorker({
    coordinators: [target ?? ""],
    group: "probe",
    nodeId: `probe-${process.pid}`,
  });
  const run = worker.runShards(async (_shard, signal) => {
    await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
  });
  for (let i = 0; i < 100 && worker.assignment.running.length === 0; i++)
    await new Promise((r) => setTimeout(r, 50));
  report(`running:${worker.assignment.running.length}`);
  await worker.close();
  await worker.close(); // idempotent
  await run;
} else {
  process.stderr.write("usage: leak-probe replica|worker <target>\n");
  process.exit(2);
}
// Let already-queued close callbacks run before looking.
setImmediate(() => report("closed"));
