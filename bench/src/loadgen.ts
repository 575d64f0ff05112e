/**
 * The load generator, always run in its own process (so its CPU is not the server's):
 *
 *   node loadgen.js load   --target H:P --transport grpc|http2 --streams N --pattern rate|saturate ...
 *   node loadgen.js follow --targets H:P,H:P --streams N --group G --node-prefix P
 *
 * It speaks JSON lines on stdout: `load` prints {"t":"connected"}, {"t":"measuring"} and
 * {"t":"result"}, then exits; `follow` runs raw workers that follow the leader and prints
 * one event per Welcome, assignment and stream end until it is killed.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ChannelPool, FollowWorker } from "./follow-worker.js";
import { runLoad } from "./load-streams.js";

const emit = (m: object) => process.stdout.write(`${JSON.stringify(m)}\n`);

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: "string", default: "" },
    targets: { type: "string", default: "" },
    transport: { type: "string", default: "grpc" },
    streams: { type: "string", default: "100" },
    pattern: { type: "string", default: "rate" },
    "interval-ms": { type: "string", default: "1000" },
    window: { type: "string", default: "1" },
    "min-gap-ms": { type: "string", default: "0" },
    group: { type: "string", default: "bench" },
    "node-prefix": { type: "string", default: "node" },
    "per-channel": { type: "string", default: "100" },
    "connect-timeout-ms": { type: "string", default: "120000" },
    "warmup-ms": { type: "string", default: "3000" },
    "measure-ms": { type: "string", default: "10000" },
    "tls-ca": { type: "string" },
    samples: { type: "boolean", default: false },
    "ramp-ms": { type: "string", default: "0" },
  },
});
const int = (s: string) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new Error(`not a non-negative integer: ${s}`);
  return n;
};

if (positionals[0] === "load") {
  const transport = values.transport === "http2" ? "http2" : "grpc";
  const result = await runLoad(
    {
      target: values.target,
      transport,
      streams: int(values.streams),
      pattern: values.pattern === "saturate" ? "saturate" : "rate",
      intervalMs: int(values["interval-ms"]),
      window: int(values.window),
      minGapMs: int(values["min-gap-ms"]),
      group: values.group,
      nodePrefix: values["node-prefix"],
      perChannel: int(values["per-channel"]),
      connectTimeoutMs: int(values["connect-timeout-ms"]),
      warmupMs: int(values["warmup-ms"]),
      measureMs: int(values["measure-ms"]),
      ...(values["tls-ca"] === undefined ? {} : { tlsCa: readFileSync(values["tls-ca"]) }),
      samples: values.samples,
      rampMs: int(values["ramp-ms"]),
    },
    emit,
  );
  // Exit once the line is flushed: stdout to a pipe is asynchronous, and process.exit()
  // right after a large write (the samples of 5,000 streams) cut it short.
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
} else if (positionals[0] === "follow") {
  const targets = values.targets.split(",").filter((s) => s !== "");
  const n = int(values.streams);
  const perChannel = int(values["per-channel"]);
  const workers: FollowWorker[] = [];
  let pool = new ChannelPool();
  for (let i = 0; i < n; i++) {
    if (i > 0 && i % perChannel === 0) pool = new ChannelPool();
    const w = new FollowWorker(
      `${values["node-prefix"]}-${String(i).padStart(6, "0")}`,
      values.group,
      targets,
      pool,
      emit,
    );
    workers.push(w);
    w.start();
  }
  process.on("SIGTERM", () => {
    for (const w of workers) w.stop();
    process.exit(0);
  });
} else {
  process.stderr.write("usage: loadgen.js load|follow [options]\n");
  process.exit(2);
}
