#!/usr/bin/env node
// Lifecycle probe, run as its own process by lifecycle.test.ts: starts a replica or a worker,
// uses it, closes it, then reports what is still keeping the event loop alive. A clean
// close() leaves nothing, so the process then exits by itself without process.exit().
//   node leak-probe.js replica <etcd-endpoints>
//   node leak-probe.js worker <coordinator-address>
//   node leak-probe.js console <etcd-endpoints>   (a replica, its HTTP server and two open
//                                                   console streams, closed while streaming)
import { createLogger, Replica, resolveReplicaOptions, startHttpServer } from "@org/coordinator";
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
} else if (kind === "console") {
  const options = resolveReplicaOptions({
    etcdEndpoints: target,
    listen: "127.0.0.1:0",
    id: "probe",
    namespace: `/probe-${process.pid}`,
  });
  const log = createLogger("probe", "silent");
  const replica = await Replica.start(options, log);
  const http = await startHttpServer(replica, "127.0.0.1:0", log);
  for (let i = 0; i < 100 && replica.role !== "leader"; i++) await new Promise((r) => setTimeout(r, 50));
  // Two pages following the feed: each gets a view, then the streams stay open.
  const streams = await Promise.all(
    [0, 1].map(async () => {
      const res = await fetch(`http://127.0.0.1:${http.port}/events`);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let text = "";
      while (!text.includes("event: view")) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      return reader;
    }),
  );
  report(`running:${replica.role}:${streams.length}`);
  await http.close();
  await replica.close();
  // The server ended the streams: each reader sees its end.
  for (const r of streams) while (!(await r.read().catch(() => ({ done: true }))).done);
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
// Let already-queued close callbacks run before looking. A socket still connecting when its
// client closed (an etcd reconnect attempt to an address that refuses) ends at its next
// poll: sockets get up to 500 ms to finish closing; every other resource (a timer, a
// server) is reported as it stood at the first look.
setImmediate(async () => {
  const active = () => process.getActiveResourcesInfo().filter((r) => r !== "TTYWrap");
  const first = active();
  const sockets = () => active().filter((r) => r === "TCPSocketWrap").length;
  const deadline = performance.now() + 500;
  while (sockets() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const left = sockets();
  process.stdout.write(
    `${JSON.stringify({
      phase: "closed",
      resources: [
        ...first.filter((r) => r !== "TCPSocketWrap"),
        ...Array<string>(left).fill("TCPSocketWrap"),
      ],
    })}\n`,
  );
});
