#!/usr/bin/env node
// An example task worker: it joins a worker group and runs the tasks the coordinator
// dispatches to it, at most --capacity at once. Each task "works" for --task-ms (or the
// number of ms its payload names, when it is a number), reporting progress, and returns a
// short text result. It prints one JSON line per event on stdout, each with a wall-clock time
// in ms, so a run can be checked for overlapping attempts.
//
// Usage: node examples/dist/task-worker.js --node <id> [--group demo]
//          [--coordinators 127.0.0.1:50051,127.0.0.1:50052] [--capacity 2] [--task-ms 200]
//
// Submit tasks to it with `pnpm coordinator tasks submit --group demo --payload 500` or
// createTaskClient(...).submit("demo", { payload: "500" }). SIGTERM/SIGINT close the worker:
// running handlers are aborted and their tasks go back to the queue at once.
import { parseArgs } from "node:util";
import { connectWorker, type Task } from "@org/worker-sdk";

const { values } = parseArgs({
  options: {
    node: { type: "string" },
    group: { type: "string", default: "demo" },
    coordinators: { type: "string", default: "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053" },
    capacity: { type: "string", default: "2" },
    "task-ms": { type: "string", default: "200" },
  },
});
if (values.node === undefined) {
  process.stderr.write("task-worker: --node is required\n");
  process.exit(2);
}
const node = values.node;
const defaultMs = Number(values["task-ms"]);

function emit(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), node, event, ...fields })}\n`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

const worker = await connectWorker({
  coordinators: values.coordinators.split(","),
  group: values.group,
  nodeId: node,
  capacity: Number(values.capacity),
});
emit("connected", { coordinator: worker.coordinator });

const shutdown = () => void worker.close();
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);

async function handle(task: Task, signal: AbortSignal): Promise<string> {
  const asked = Number(new TextDecoder().decode(task.payload));
  const ms = Number.isFinite(asked) && asked > 0 ? asked : defaultMs;
  emit("task_start", { task: task.id, attempt: task.attempt });
  try {
    for (let done = 0; done < ms; done += 50) {
      await sleep(Math.min(50, ms - done), signal);
      // Checked now, not only through the signal: after a pause of this process the leader
      // may have given the task to someone else before the SDK's periodic check ran.
      if (!task.valid()) throw signal.reason;
      emit("task_step", { task: task.id, attempt: task.attempt });
      task.progress((done + 50) / ms);
    }
    emit("task_end", { task: task.id, attempt: task.attempt, outcome: "succeeded" });
    return `done by ${node} in attempt ${task.attempt}`;
  } catch (e) {
    emit("task_end", { task: task.id, attempt: task.attempt, outcome: "aborted", reason: String(e) });
    throw e;
  }
}

await worker.runTasks(handle);
emit("closed");
