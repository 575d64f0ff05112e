#!/usr/bin/env node
// A demo task producer: submits --rate tasks per second to a group (each payload a duration
// in ms between --min-ms and --max-ms, which examples/task-worker works for), and prints one
// JSON line per second with what it submitted and how many of those have finished, by state.
// The run command (scripts/run.sh) starts it beside two task workers.
//
// Usage: node examples/dist/task-feed.js [--group jobs] [--rate 4]
//          [--coordinators 127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053] [--min-ms 200] [--max-ms 1500]
import { parseArgs } from "node:util";
import { createTaskClient } from "@org/worker-sdk";

const { values } = parseArgs({
  options: {
    group: { type: "string", default: "jobs" },
    rate: { type: "string", default: "4" },
    coordinators: { type: "string", default: "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053" },
    "min-ms": { type: "string", default: "200" },
    "max-ms": { type: "string", default: "1500" },
  },
});
const group = values.group;
const rate = Number(values.rate);
const [minMs, maxMs] = [Number(values["min-ms"]), Number(values["max-ms"])];
if (!(rate > 0 && rate <= 1000) || !(minMs >= 0 && maxMs >= minMs)) {
  process.stderr.write("task-feed: --rate must be in (0, 1000] and 0 <= --min-ms <= --max-ms\n");
  process.exit(2);
}

const stop = new AbortController();
for (const sig of ["SIGTERM", "SIGINT"] as const) process.once(sig, () => stop.abort());
const client = createTaskClient({ coordinators: values.coordinators.split(","), signal: stop.signal });
// Final state by task id: a resumed or restarted feed may show a task twice.
const finals = new Map<string, string>();
let submitted = 0;
let failedSubmits = 0;

// Results come from the group's change feed, not one wait per task.
const watching = (async () => {
  try {
    for await (const e of client.watch(group)) {
      if (e.type !== "task") continue;
      const s = e.task.state;
      if (s === "succeeded" || s === "failed" || s === "cancelled") finals.set(e.task.id, s);
    }
  } catch (e) {
    // closed, or the feed ended with the client
    process.stderr.write(`watch ended: ${String(e)}\n`);
  }
})();

const report = setInterval(() => {
  const finished: Record<string, number> = {};
  for (const s of finals.values()) finished[s] = (finished[s] ?? 0) + 1;
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), event: "feed", group, submitted, failedSubmits, finished })}\n`,
  );
}, 1000);
let n = 0;
while (!stop.signal.aborted) {
  const started = Date.now();
  const batch = Array.from({ length: Math.max(1, Math.round(rate)) }, () => {
    n += 1;
    return {
      id: `demo-${started}-${n}`,
      payload: String(Math.round(minMs + Math.random() * (maxMs - minMs))),
    };
  });
  try {
    await client.submit(group, batch);
    submitted += batch.length;
  } catch {
    failedSubmits += batch.length; // no leader for a moment (a failover): the next second tries again
  }
  await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - started))));
}
clearInterval(report);
await client.close();
await watching;
