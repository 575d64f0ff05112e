#!/usr/bin/env node
// An example sharded job: it joins a worker group, and for every shard it owns streams
// that shard's records (`taskId % totalShards == shardId`) from the coordinator's data
// source and "processes" them. It prints one JSON line per event on stdout, each with a
// wall-clock time in ms, so a run can be replayed as an ownership timeline.
//
// Usage: node examples/dist/dataset-job.js --node <id> [--group demo]
//          [--coordinators 127.0.0.1:50051,127.0.0.1:50052] [--item-ms 50] [--loop]
//          [--checkpoint-etcd http://127.0.0.1:2379 --checkpoint-prefix /ckpt/]
//          [--on-sigterm leave|restart]
//
// On SIGTERM (and SIGINT) the job closes its worker: `leave` (the default) leaves the group,
// so its shards move to the others in a new version; `restart` is a planned restart
// (`worker.close({ restart: true })`): the shards are released, the membership stays for the
// coordinator's restart grace, and the next process with the same --node gets the same
// shards back with no new version. Use `restart` in a rolling deploy.
//
// With --checkpoint-etcd the job is at-least-once with a checkpoint, as real jobs are: it
// skips items already marked done under the prefix and marks each item after processing,
// so a new owner resumes where the last one stopped. Only an item in flight when its
// worker dies can be processed twice.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connectWorker, type Shard } from "@org/worker-sdk";
import { Etcd3 } from "etcd3";

const { values } = parseArgs({
  options: {
    node: { type: "string" },
    group: { type: "string", default: "demo" },
    coordinators: { type: "string", default: "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053" },
    "item-ms": { type: "string", default: "50" },
    loop: { type: "boolean", default: false },
    capacity: { type: "string", default: "1" },
    "checkpoint-etcd": { type: "string" },
    "checkpoint-prefix": { type: "string", default: "/checkpoints/" },
    // Start only on SIGUSR2: lets a drill release many workers at the same instant.
    "wait-for-signal": { type: "boolean", default: false },
    "on-sigterm": { type: "string", default: "leave" },
    // "leave": once an operator drains this node (DRAIN) and it runs no shard any more, leave.
    "on-drain": { type: "string", default: "stay" },
    // A bearer token of the group (replicas with --auth tokens): its first line.
    "token-file": { type: "string" },
  },
});
const onSigterm = values["on-sigterm"];
if (onSigterm !== "leave" && onSigterm !== "restart") {
  process.stderr.write(
    `dataset-job: --on-sigterm must be leave or restart, got ${JSON.stringify(onSigterm)}\n`,
  );
  process.exit(2);
}
if (values["on-drain"] !== "stay" && values["on-drain"] !== "leave") {
  process.stderr.write(
    `dataset-job: --on-drain must be stay or leave, got ${JSON.stringify(values["on-drain"])}\n`,
  );
  process.exit(2);
}
if (values["wait-for-signal"]) {
  // A signal listener does not keep the event loop alive; this timer does, until the signal.
  const keepAlive = setInterval(() => undefined, 1000);
  const go = new Promise<void>((resolve) => process.once("SIGUSR2", () => resolve())).finally(() =>
    clearInterval(keepAlive),
  );
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), node: values.node, event: "waiting" })}\n`,
  );
  await go;
}
const ckptHosts = values["checkpoint-etcd"];
const checkpoint = ckptHosts === undefined ? undefined : new Etcd3({ hosts: ckptHosts.split(",") });
const ckptKey = (id: string) => `${values["checkpoint-prefix"]}${id}`;
if (values.node === undefined) {
  process.stderr.write("dataset-job: --node <id> is required\n");
  process.exit(2);
}
const itemMs = Number(values["item-ms"]);
const print = (event: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), node: values.node, event, ...fields })}\n`,
  );

// DATASET_JOB_SDK_LOG=1 prints the SDK's own log entries on stderr (one JSON line each), so a
// drill or a test can tell why a worker reconnected or fenced itself.
const sdkLog = process.env.DATASET_JOB_SDK_LOG === "1";
const tokenFile = values["token-file"];
const token = tokenFile === undefined ? undefined : readFileSync(tokenFile, "utf8").split(/\r?\n/)[0]?.trim();
const worker = await connectWorker({
  coordinators: values.coordinators.split(","),
  group: values.group,
  nodeId: values.node,
  capacity: Number(values.capacity),
  ...(token === undefined ? {} : { token }),
  ...(sdkLog ? { onLog: (entry) => process.stderr.write(`${JSON.stringify(entry)}\n`) } : {}),
});
print("joined", { assignment: worker.assignment, incarnation: worker.incarnation });
const shutdown = () => {
  print("closing", { restart: onSigterm === "restart" });
  void worker.close({ restart: onSigterm === "restart" });
};
process.once("SIGTERM", shutdown);
process.once("SIGINT", shutdown);

let draining = false;
let leaving = false;
void (async () => {
  for await (const e of worker.events()) {
    if (e.type === "assignment") print("assignment", { ...e.assignment });
    else if (e.type === "shard_started" || e.type === "shard_stopped")
      print(e.type, { shard: e.shard.id, totalShards: e.shard.totalShards, version: e.shard.version });
    else if (e.type === "connected")
      print("connected", {
        coordinator: e.coordinator,
        leaderEpoch: e.leaderEpoch,
        resumed: e.resumed,
        incarnation: e.incarnation,
      });
    else if (e.type === "disconnected")
      print("disconnected", {
        coordinator: e.coordinator,
        code: e.code,
        reason: e.reason,
        welcomed: e.welcomed,
      });
    else if (e.type === "stale_view") print("stale_view", { ...e });
    else if (e.type === "fenced") print("fenced");
    else if (e.type === "released") print("released", { version: e.version });
    else if (e.type === "drain_requested") {
      print("drain_requested", { reason: e.reason });
      draining = true;
    }
    // Drained and nothing left to run: the shards went elsewhere through the handoff.
    if (draining && values["on-drain"] === "leave" && !leaving) {
      const a = worker.assignment;
      if (a.phase === "active" && a.shards.length === 0 && a.running.length === 0) {
        leaving = true;
        print("drained_leaving");
        void worker.close();
      }
    }
  }
})();

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

let processed = 0;
const run = worker.runShards(async (shard: Shard, signal: AbortSignal) => {
  do {
    try {
      for await (const rec of worker.fetchShardData(shard, { batchSize: 50, signal })) {
        if (signal.aborted) break;
        // Check ownership right before the side effect: the SDK aborts `signal` the moment
        // the shard is lost, and owns() is false from that instant.
        if (checkpoint !== undefined && (await checkpoint.get(ckptKey(rec.id)).string()) !== null) continue;
        if (!worker.owns(rec.id)) break;
        print("processed", {
          shard: shard.id,
          totalShards: shard.totalShards,
          version: shard.version,
          id: rec.id,
        });
        processed += 1;
        await sleep(itemMs, signal);
        await checkpoint?.put(ckptKey(rec.id)).value(values.node ?? "");
      }
    } catch (e) {
      if (!signal.aborted) print("fetch_failed", { shard: shard.id, error: String(e) });
    }
    if (values.loop) await sleep(1000, signal);
  } while (values.loop && !signal.aborted);
  if (signal.aborted) return;
  print("shard_done", { shard: shard.id });
  // Keep the shard until it is taken away.
  await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
});
// runShards resolves once the worker closed, or rejects with the error that ended it.
const failure = await run.then(
  () => undefined,
  (e: unknown) => e,
);
checkpoint?.close();
print("closed", { processed, ...(failure === undefined ? {} : { error: String(failure) }) });
if (failure !== undefined) process.exitCode = 1;
