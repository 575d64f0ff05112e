#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import { CoordinatorError } from "../errors.js";
import { createLogger } from "../logger.js";
import { Replica } from "../replica/replica.js";
import { resolveReplicaOptions } from "../replica/replica-options.js";
import { startHttpServer } from "../server/http-server.js";
import { createEtcdClient } from "../store/etcd-client.js";
import { classifyEtcdError, describeEtcdError } from "../store/etcd-errors.js";
import { keyLayout } from "../store/keys.js";
import { formatStatus, readStatus } from "./status-report.js";

// Exit codes: 0 ok, 1 runtime failure, 2 invalid usage or settings (one clear line on stderr).
const usageError = (message: string): never => {
  process.stderr.write(`coordinator: ${message}\n`);
  process.exit(2);
};

const program = new Command()
  .name("coordinator")
  .description(
    "Shard coordinator (ResourceManager) replica. Every flag can also be set with the environment variable shown.",
  )
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  .showHelpAfterError(false);

const etcdOption = () =>
  new Option("--etcd <endpoints>", "comma-separated etcd client URLs")
    .env("RM_ETCD")
    .default("http://127.0.0.1:2379");
const nsOption = () =>
  new Option("--namespace <prefix>", "etcd key prefix").env("RM_NAMESPACE").default("/shardmgr");

program
  .command("serve", { isDefault: true })
  .description("run a replica (the default command)")
  .addOption(etcdOption())
  .addOption(
    new Option("--listen <host:port>", "gRPC listen address").env("RM_LISTEN").default("0.0.0.0:50051"),
  )
  .addOption(
    new Option(
      "--advertise <host:port>",
      "address workers and peers use (default: listen, 0.0.0.0 -> hostname)",
    ).env("RM_ADVERTISE"),
  )
  .addOption(new Option("--id <id>", "replica id (default: <hostname>-<pid>)").env("RM_ID"))
  .addOption(nsOption())
  .addOption(
    new Option("--leader-ttl <seconds>", "election lease TTL; a dead leader is replaced within about this")
      .env("RM_LEADER_TTL")
      .default("3"),
  )
  .addOption(
    new Option("--heartbeat-interval <ms>", "interval workers heartbeat at")
      .env("RM_HEARTBEAT_INTERVAL")
      .default("1000"),
  )
  .addOption(
    new Option("--session-timeout <ms>", "a member silent this long is expelled (> 2 heartbeat intervals)")
      .env("RM_SESSION_TIMEOUT")
      .default("5000"),
  )
  .addOption(
    new Option(
      "--member-lease-ttl <seconds>",
      "TTL of each member's etcd lease (> leader TTL and > session timeout)",
    )
      .env("RM_MEMBER_LEASE_TTL")
      .default("15"),
  )
  .addOption(
    new Option("--rebalance-delay <ms>", "debounce between a membership change and the new version")
      .env("RM_REBALANCE_DELAY")
      .default("1000"),
  )
  .addOption(
    new Option(
      "--strategy <name>",
      "default strategy: modulo (totalShards = members) or sticky (fixed --shards, minimal moves)",
    )
      .env("RM_STRATEGY")
      .default("modulo"),
  )
  .addOption(new Option("--shards <n>", "shard count of sticky groups").env("RM_SHARDS").default("16"))
  .addOption(
    new Option("--http-listen <host:port>", "HTTP /healthz /readyz /metrics /status (off when empty)")
      .env("RM_HTTP_LISTEN")
      .default(""),
  )
  .addOption(
    new Option("--max-message-bytes <n>", "largest inbound gRPC message")
      .env("RM_MAX_MESSAGE_BYTES")
      .default("65536"),
  )
  .action(async (o: Record<string, string | undefined>) => {
    let options: ReturnType<typeof resolveReplicaOptions>;
    try {
      options = resolveReplicaOptions({
        etcdEndpoints: o.etcd,
        listen: o.listen,
        advertise: o.advertise,
        id: o.id,
        namespace: o.namespace,
        leaderTtlSec: o.leaderTtl,
        heartbeatIntervalMs: o.heartbeatInterval,
        sessionTimeoutMs: o.sessionTimeout,
        memberLeaseTtlSec: o.memberLeaseTtl,
        rebalanceDelayMs: o.rebalanceDelay,
        strategy: o.strategy,
        shards: o.shards,
        httpListen: o.httpListen,
        maxMessageBytes: o.maxMessageBytes,
      });
    } catch (e) {
      return usageError(e instanceof CoordinatorError ? e.message : String(e));
    }
    const log = createLogger(options.id);
    log.info({ event: "replica_starting", options: { ...options } });
    // Neither waits for etcd: both listeners are up at once, and while etcd cannot be reached
    // /readyz says why and the replica logs each retry (see Replica).
    const replica = await Replica.start(options, log);
    const http =
      options.httpListen === "" ? undefined : await startHttpServer(replica, options.httpListen, log);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ event: "signal", signal });
      void (async () => {
        await replica.close();
        await http?.close();
        process.exit(0);
      })();
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });

program
  .command("status")
  .description("print the leader and every group's version, phase and owners, read from etcd")
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--json", "print JSON")
  .option("--watch <ms>", "print again every <ms> until interrupted")
  .action(async (o: { etcd: string; namespace: string; json?: boolean; watch?: string }) => {
    const client = createEtcdClient(o.etcd.split(","));
    const keys = keyLayout(o.namespace);
    // Every etcd call has a 2 s deadline and is retried only when no connection could be
    // made, so an unreachable etcd fails this within a few seconds, never hangs.
    const unreachable = (e: unknown) =>
      `cannot read the status from etcd at ${o.etcd}: ${classifyEtcdError(e)}: ${describeEtcdError(e)}`;
    const once = async () => {
      const report = await readStatus(client, keys);
      process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : `${formatStatus(report)}\n`);
    };
    try {
      if (o.watch === undefined) {
        try {
          await once();
        } catch (e) {
          process.stderr.write(`coordinator: ${unreachable(e)}\n`);
          process.exitCode = 1;
        }
        return;
      }
      const every = Number(o.watch);
      if (!Number.isInteger(every) || every < 100) usageError("--watch needs an interval of at least 100 ms");
      for (;;) {
        if (!o.json) process.stdout.write(`\x1b[2J\x1b[H${new Date().toISOString()}\n`);
        await once().catch((e: unknown) => process.stdout.write(`${unreachable(e)}\n`));
        await new Promise((r) => setTimeout(r, every));
      }
    } finally {
      client.close();
    }
  });

program
  .command("data")
  .description("manage the records of the built-in data source")
  .command("load")
  .description(
    "write records <ns>/groups/<group>/data/<id>: ids 0..count-1 (payload 'item-<id>'), or JSON lines {id, payload} from --file",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--count <n>", "write ids 0..n-1")
  .option("--file <path>", 'JSON lines of {"id": string, "payload": string}')
  .action(async (o: { etcd: string; namespace: string; group: string; count?: string; file?: string }) => {
    const records: { id: string; payload: string }[] = [];
    if (o.file !== undefined) {
      for (const line of readFileSync(o.file, "utf8").split("\n")) {
        if (line.trim() === "") continue;
        const r = JSON.parse(line) as { id?: unknown; payload?: unknown };
        if (typeof r.id !== "string" || typeof r.payload !== "string") usageError(`bad record line: ${line}`);
        records.push({ id: String(r.id), payload: String(r.payload) });
      }
    } else {
      const n = Number(o.count ?? "");
      if (!Number.isInteger(n) || n < 1 || n > 1_000_000)
        usageError("--count must be an integer in 1..1000000 (or use --file)");
      // Zero-padded ids keep etcd's bytewise key order equal to numeric order.
      const width = String(n - 1).length;
      for (let i = 0; i < n; i++) records.push({ id: String(i).padStart(width, "0"), payload: `item-${i}` });
    }
    const client = createEtcdClient(o.etcd.split(","));
    const keys = keyLayout(o.namespace);
    try {
      for (let i = 0; i < records.length; i += 100) {
        const batch = records.slice(i, i + 100);
        // One transaction per 100 puts (an always-true guard: etcd3 batches only in a txn).
        await client
          .if(keys.data(o.group, batch[0]?.id ?? ""), "Version", ">", -1)
          .then(...batch.map((r) => client.put(keys.data(o.group, r.id)).value(r.payload)))
          .commit();
      }
      process.stdout.write(`loaded ${records.length} records into ${keys.dataPrefix(o.group)}\n`);
    } finally {
      client.close();
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help")
      process.exit(0);
    process.exit(2);
  }
  process.stderr.write(`coordinator: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
