// A task worker in its own process, for the tasks bench's migration row (the bench SIGKILLs
// it): joins `group` with `capacity` slots and runs every task until its signal aborts (a
// task "works" until cancelled, its worker dies, or the payload's number of ms passed).
// Prints JSON lines: {t:"ready"}, then {t:"started", task, attempt, at} per handler start.
//
// Usage: node bench/dist/task-worker-child.js <coordinators,...> <group> <nodeId> <capacity>
import { connectWorker } from "@org/worker-sdk";
import { wallNow } from "./follow-worker.js";

const [coordinators = "", group = "", nodeId = "", capacity = "1"] = process.argv.slice(2);
const emit = (m: object) => process.stdout.write(`${JSON.stringify(m)}\n`);

const worker = await connectWorker({
  coordinators: coordinators.split(","),
  group,
  nodeId,
  capacity: Number(capacity),
});
process.once("SIGTERM", () => void worker.close());
emit({ t: "ready" });
await worker.runTasks(async (task, signal) => {
  emit({ t: "started", task: task.id, attempt: task.attempt, at: wallNow() });
  const ms = Number(new TextDecoder().decode(task.payload)) || 60_000;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return undefined;
});
