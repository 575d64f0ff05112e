#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import type { ConsoleView } from "../console/console-view.js";
import { type ReplicaHttpAuth, readBody, replicaRequest } from "../console/replica-http.js";
import { CoordinatorError } from "../errors.js";
import { createLogger } from "../logger.js";
import { etcdSecurityOf, Replica } from "../replica/replica.js";
import { resolveReplicaOptions } from "../replica/replica-options.js";
import { newToken, type TokenRole, tokenRecordSchema, tokenRoles } from "../server/auth-tokens.js";
import { startHttpServer } from "../server/http-server.js";
import { checkName } from "../server/names.js";
import { maxBuckets } from "../sharding/data-layout.js";
import { type DataRecordInput, loadShardData, sequentialRecords } from "../sharding/data-loader.js";
import { parseDataSourceConfig } from "../sharding/data-source-config.js";
import { DataSourceError } from "../sharding/data-source-error.js";
import { createEtcdClient } from "../store/etcd-client.js";
import { classifyEtcdError, describeEtcdError } from "../store/etcd-errors.js";
import { loadEtcdSecurity } from "../store/etcd-security.js";
import { keyLayout } from "../store/keys.js";
import { groupConfigSchema, parseRecord } from "../store/records.js";
import { type ControlChange, changeControl, requestRepair, setClusterSettings } from "./admin-commands.js";
import {
  consoleViews,
  describeChanges,
  formatGroups,
  formatMembers,
  formatShards,
  groupOf,
  leaderConsoleAddress,
  readLeaderView,
} from "./console-client.js";
import { discoverCoordinators, uploadShardData } from "./data-upload.js";
import { formatStatus, readStatus } from "./status-report.js";
import { addTaskCommands } from "./task-commands.js";

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
/** `--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`, `--etcd-password-file` (every command that talks to etcd). */
const etcdSecurityOptions = (): Option[] => [
  new Option("--etcd-ca <file>", "PEM CA of etcd's server certificates (with https:// endpoints)").env(
    "RM_ETCD_CA",
  ),
  new Option("--etcd-cert <file>", "PEM client certificate for etcd (--client-cert-auth)").env(
    "RM_ETCD_CERT",
  ),
  new Option("--etcd-key <file>", "PEM private key of --etcd-cert").env("RM_ETCD_KEY"),
  new Option(
    "--etcd-user <name>",
    "etcd user (etcd auth); password from --etcd-password-file or RM_ETCD_PASSWORD",
  ).env("RM_ETCD_USER"),
  new Option("--etcd-password-file <file>", "file whose first line is the etcd user's password").env(
    "RM_ETCD_PASSWORD_FILE",
  ),
];

interface EtcdFlags {
  etcd: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
}

/** The etcd client a CLI command's flags describe (exit 2 with one line when a file is bad). */
function etcdClient(o: EtcdFlags): ReturnType<typeof createEtcdClient> {
  try {
    return createEtcdClient(
      o.etcd.split(","),
      loadEtcdSecurity({
        caFile: o.etcdCa,
        certFile: o.etcdCert,
        keyFile: o.etcdKey,
        user: o.etcdUser,
        passwordFile: o.etcdPasswordFile,
      }),
    );
  } catch (e) {
    return usageError(e instanceof CoordinatorError ? e.message : String(e));
  }
}

/** The bytes of a file a flag names, or exit 2 with one line. */
function readOrExit(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    return usageError(`${flag} ${path}: cannot read (${(e as Error).message})`);
  }
}

/** `--http-token-file`, `--http-ca`: how commands that read the leader's HTTP listener reach it. */
const httpAuthOptions = (): Option[] => [
  new Option(
    "--http-token-file <file>",
    "first line: the replicas' --http-token-file token (needed beyond loopback when they have one)",
  ).env("RM_HTTP_TOKEN_FILE"),
  new Option(
    "--http-ca <file>",
    "PEM CA of the replicas' certificate (their HTTP listener serves HTTPS with --tls-cert)",
  ).env("RM_HTTP_CA"),
];

interface HttpAuthFlags {
  httpTokenFile?: string;
  httpCa?: string;
}

/** The credentials a command's HTTP flags name (exit 2 with one line when a file is bad). */
function httpAuth(o: HttpAuthFlags): ReplicaHttpAuth {
  const token =
    o.httpTokenFile === undefined
      ? undefined
      : readOrExit("--http-token-file", o.httpTokenFile).toString("utf8").split(/\r?\n/)[0]?.trim();
  if (token !== undefined && token === "")
    usageError(`--http-token-file ${o.httpTokenFile}: the file is empty`);
  return {
    ...(token === undefined ? {} : { token }),
    ...(o.httpCa === undefined ? {} : { ca: readOrExit("--http-ca", o.httpCa) }),
  };
}

const nsOption = () =>
  new Option("--namespace <prefix>", "etcd key prefix").env("RM_NAMESPACE").default("/shardmgr");

program
  .command("serve", { isDefault: true })
  .description("run a replica (the default command)")
  .addOption(etcdOption())
  .addOption(
    new Option(
      "--listen <host:port>",
      "gRPC listen address; plaintext only on loopback unless --insecure (default: 127.0.0.1:50051, 0.0.0.0:50051 with TLS or --insecure)",
    ).env("RM_LISTEN"),
  )
  .addOption(
    new Option(
      "--tls-cert <file>",
      "PEM certificate chain of the gRPC listener (reloaded when it changes)",
    ).env("RM_TLS_CERT"),
  )
  .addOption(new Option("--tls-key <file>", "PEM private key of --tls-cert").env("RM_TLS_KEY"))
  .addOption(
    new Option(
      "--tls-client-ca <file>",
      "PEM CA bundle: gRPC clients must present a certificate it signed (mutual TLS)",
    ).env("RM_TLS_CLIENT_CA"),
  )
  .addOption(
    new Option(
      "--http-token-file <file>",
      "first line: the bearer token that opens /metrics and /status to non-loopback callers (/healthz, /readyz stay open)",
    ).env("RM_HTTP_TOKEN_FILE"),
  )
  .addOption(
    new Option(
      "--auth <mode>",
      "who may call: none, tokens (bearer tokens, see `coordinator auth token`) or mtls (client certificate identities)",
    )
      .env("RM_AUTH")
      .default("none"),
  )
  .addOption(
    new Option(
      "--insecure",
      "allow plaintext gRPC and HTTP listeners on non-loopback addresses (anyone reaching them can join, read and submit)",
    ).env("RM_INSECURE"),
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
      "--rebalance-max-delay <ms>",
      "longest wait from the first change of a burst to its version, however many follow (default: 5 x rebalance delay)",
    ).env("RM_REBALANCE_MAX_DELAY"),
  )
  .addOption(
    new Option(
      "--restart-grace <ms>",
      "a worker that left for a planned restart keeps its membership and shards this long (default: session timeout)",
    ).env("RM_RESTART_GRACE"),
  )
  .addOption(
    new Option("--hello-timeout <ms>", "a stream that sends no Hello this long after opening is closed")
      .env("RM_HELLO_TIMEOUT")
      .default("10000"),
  )
  .addOption(
    new Option("--max-streams <n>", "worker streams one replica holds at most (RESOURCE_EXHAUSTED beyond)")
      .env("RM_MAX_STREAMS")
      .default("50000"),
  )
  .addOption(
    new Option("--max-streams-per-connection <n>", "concurrent HTTP/2 streams one client connection may open")
      .env("RM_MAX_STREAMS_PER_CONNECTION")
      .default("1000"),
  )
  .addOption(
    new Option("--unary-rate <n>", "GetShardInfo/FetchShardData calls per second per replica (burst: twice)")
      .env("RM_UNARY_RATE")
      .default("2000"),
  )
  .addOption(
    new Option(
      "--unary-rate-per-node <n>",
      "GetShardInfo/FetchShardData calls per second per (group, node) (burst: twice)",
    )
      .env("RM_UNARY_RATE_PER_NODE")
      .default("20"),
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
    new Option("--max-message-bytes <n>", "largest inbound gRPC message (a SubmitTasks batch must fit)")
      .env("RM_MAX_MESSAGE_BYTES")
      .default("4194304"),
  )
  .addOption(
    new Option("--max-task-bytes <n>", "largest payload (and result) of one task")
      .env("RM_MAX_TASK_BYTES")
      .default("65536"),
  )
  .addOption(
    new Option("--max-queued-tasks <n>", "unfinished tasks one group may hold (RESOURCE_EXHAUSTED beyond)")
      .env("RM_MAX_QUEUED_TASKS")
      .default("100000"),
  )
  .addOption(
    new Option("--task-retention <ms>", "how long a finished task's record stays in etcd")
      .env("RM_TASK_RETENTION")
      .default("3600000"),
  )
  .addOption(
    new Option(
      "--task-write-linger <ms>",
      "how long a task write waits for others to share its etcd transaction",
    )
      .env("RM_TASK_WRITE_LINGER")
      .default("2"),
  )
  .addOption(
    new Option("--max-txns-in-flight <n>", "task transactions in flight at once")
      .env("RM_MAX_TXNS_IN_FLIGHT")
      .default("4"),
  )
  .action(async (flags: Record<string, string | boolean | undefined>) => {
    // Every flag is a string but --insecure (a switch).
    const o = Object.fromEntries(
      Object.entries(flags).filter((e): e is [string, string] => typeof e[1] === "string"),
    ) as Record<string, string | undefined>;
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
        rebalanceMaxDelayMs: o.rebalanceMaxDelay,
        restartGraceMs: o.restartGrace,
        helloTimeoutMs: o.helloTimeout,
        maxStreams: o.maxStreams,
        maxStreamsPerConnection: o.maxStreamsPerConnection,
        unaryRatePerSecond: o.unaryRate,
        unaryRatePerNode: o.unaryRatePerNode,
        strategy: o.strategy,
        shards: o.shards,
        httpListen: o.httpListen,
        maxMessageBytes: o.maxMessageBytes,
        tlsCertFile: o.tlsCert,
        tlsKeyFile: o.tlsKey,
        tlsClientCaFile: o.tlsClientCa,
        insecure: flags.insecure === true || flags.insecure === "true",
        auth: o.auth,
        httpTokenFile: o.httpTokenFile,
        etcdCaFile: o.etcdCa,
        etcdCertFile: o.etcdCert,
        etcdKeyFile: o.etcdKey,
        etcdUser: o.etcdUser,
        etcdPasswordFile: o.etcdPasswordFile,
        tasks: {
          maxTaskBytes: o.maxTaskBytes,
          maxQueuedTasks: o.maxQueuedTasks,
          taskRetentionMs: o.taskRetention,
          writeLingerMs: o.taskWriteLinger,
          maxTxnsInFlight: o.maxTxnsInFlight,
        },
      });
    } catch (e) {
      return usageError(e instanceof CoordinatorError ? e.message : String(e));
    }
    const log = createLogger(options.id);
    log.info({ event: "replica_starting", options: { ...options } });
    // Neither waits for etcd: both listeners are up at once, and while etcd cannot be reached
    // /readyz says why and the replica logs each retry (see Replica).
    let etcdSecurity: ReturnType<typeof etcdSecurityOf>;
    try {
      etcdSecurity = etcdSecurityOf(options);
    } catch (e) {
      return usageError(e instanceof CoordinatorError ? e.message : String(e));
    }
    // Credentials etcd refuses are a configuration error: say it once and exit 2, rather than
    // retrying forever. An unreachable etcd is not (the replica waits for it, see Replica).
    if (options.etcdUser !== "" || options.etcdCertFile !== "") {
      const probe = createEtcdClient(options.etcdEndpoints, etcdSecurity);
      try {
        await probe.get(keyLayout(options.namespace).clusterConfig).string();
      } catch (e) {
        if (classifyEtcdError(e) === "auth")
          return usageError(
            `etcd refused the credentials of --etcd-user/--etcd-cert: ${describeEtcdError(e)}`,
          );
      } finally {
        probe.close();
      }
    }
    let httpToken: string | undefined;
    if (options.httpTokenFile !== "") {
      try {
        httpToken = readFileSync(options.httpTokenFile, "utf8").split(/\r?\n/)[0]?.trim();
      } catch (e) {
        return usageError(
          `--http-token-file ${options.httpTokenFile}: cannot read (${(e as Error).message})`,
        );
      }
      if (httpToken === undefined || httpToken.length < 16)
        return usageError(
          `--http-token-file ${options.httpTokenFile}: the token must be at least 16 characters`,
        );
    }
    let replica: Replica;
    try {
      replica = await Replica.start(options, log);
    } catch (e) {
      // Unreadable or mismatched TLS files: one line, exit 2, no retry.
      if (e instanceof CoordinatorError && e.code === "invalid_config") return usageError(e.message);
      throw e;
    }
    const http =
      options.httpListen === ""
        ? undefined
        : await startHttpServer(replica, options.httpListen, log, {
            tls: replica.tlsCredentials,
            token: httpToken,
            open: options.insecure && httpToken === undefined,
          });
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
    const client = etcdClient(o);
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

/** Runs a read of the leader's view with the `status` flags; errors are one line, exit 1. */
async function withLeaderView(
  o: EtcdFlags & HttpAuthFlags & { namespace: string },
  fn: (view: ConsoleView) => string | object,
  json: boolean,
): Promise<void> {
  const auth = httpAuth(o);
  const client = etcdClient(o);
  try {
    const out = fn(await readLeaderView(client, keyLayout(o.namespace), auth));
    process.stdout.write(json ? `${JSON.stringify(out)}\n` : `${String(out)}\n`);
  } catch (e) {
    process.stderr.write(
      `coordinator: ${e instanceof CoordinatorError ? e.message : describeEtcdError(e)}\n`,
    );
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

program
  .command("groups")
  .description("list the groups with strategy, version, phase and members, from the leader")
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--json", "print JSON")
  .action((o: { etcd: string; namespace: string; json?: boolean }) =>
    withLeaderView(
      o,
      (v) => (o.json ? v.groups.map(({ timeline: _t, ...g }) => g) : formatGroups(v)),
      o.json === true,
    ),
  );

program
  .command("members")
  .description("a group's members as the leader sees them: connected, last heard, running shards and tasks")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--json", "print JSON")
  .action((o: { etcd: string; namespace: string; group: string; json?: boolean }) =>
    withLeaderView(
      o,
      (v) => (o.json ? groupOf(v, o.group).members : formatMembers(groupOf(v, o.group))),
      o.json === true,
    ),
  );

program
  .command("shards")
  .description("a group's shard -> owner map and, during a handoff, the pending moves, from the leader")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--json", "print JSON")
  .action((o: { etcd: string; namespace: string; group: string; json?: boolean }) =>
    withLeaderView(
      o,
      (v) => {
        const g = groupOf(v, o.group);
        return o.json
          ? {
              group: g.group,
              version: g.version,
              phase: g.phase,
              owners: g.owners,
              moves: g.moves,
              awaitingRelease: g.awaitingRelease,
              released: g.released,
            }
          : formatShards(g);
      },
      o.json === true,
    ),
  );

program
  .command("watch")
  .description(
    "follow the cluster live from the leader's console feed: leader, candidates, versions, members joining and leaving (one line per change; follows failovers)",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--json", "print each view as one JSON line")
  .action(async (o: EtcdFlags & HttpAuthFlags & { namespace: string; json?: boolean }) => {
    const auth = httpAuth(o);
    const client = etcdClient(o);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    let prev: ConsoleView | undefined;
    let lastProblem = "";
    try {
      while (!stop.signal.aborted) {
        try {
          const target = await leaderConsoleAddress(client, keyLayout(o.namespace));
          for await (const view of consoleViews(target, stop.signal, auth)) {
            const lines = o.json ? [JSON.stringify(view)] : describeChanges(prev, view);
            // Plain lines, no terminal escape codes: the output may be a file or a pipe.
            for (const l of lines)
              process.stdout.write(o.json ? `${l}\n` : `${new Date(view.at).toISOString()} ${l}\n`);
            prev = view;
            lastProblem = "";
          }
        } catch (e) {
          if (stop.signal.aborted) break;
          const why = e instanceof CoordinatorError ? e.message : describeEtcdError(e);
          if (why !== lastProblem) process.stderr.write(`coordinator: ${why}; retrying\n`);
          lastProblem = why;
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 500);
          stop.signal.addEventListener(
            "abort",
            () => {
              clearTimeout(t);
              resolve();
            },
            { once: true },
          );
        });
      }
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      client.close();
    }
  });

program
  .command("data")
  .description(
    "manage the records of a group's data source (the built-in one keeps them under <ns>-data/, outside <ns>/)",
  )
  .command("load")
  .description(
    "upload records into a group's data source with PutShardData (through a running replica; the group config's " +
      "dataSource says where they go: the built-in etcd source, or PostgreSQL): " +
      "with --count N, ids 0..N-1 zero-padded to the width of N-1 (--count 200 writes 000..199) " +
      "with payload 'item-<id>'; or JSON lines {id, payload} from --file. Loading an id again overwrites it " +
      "(the same payload again changes nothing). With no replica running, records for the built-in source are " +
      "written to <ns>-data/<group>/b/<bucket>/<id> directly.",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--count <n>", "write ids 0..n-1, zero-padded (1..1000000)")
  .option("--file <path>", 'JSON lines of {"id": string, "payload": string}')
  .option(
    "--buckets <n>",
    "buckets of a group loaded for the first time into the etcd source (default: a sticky group's shard count, else 1..720 by dataset size); " +
      "a shard of T reads exactly its records when T divides it, T/gcd(buckets,T) times them otherwise",
  )
  .addOption(
    new Option(
      "--coordinator <host:port,...>",
      "replicas to upload through (default: every live replica, from the election keys in etcd)",
    ).env("RM_COORDINATOR"),
  )
  .option("--gzip", "compress the upload (pays on text-like payloads; see docs/data.md)")
  .addOption(
    new Option("--coordinator-ca <file>", "PEM CA of the replicas' certificates (TLS to the replicas)").env(
      "RM_COORDINATOR_CA",
    ),
  )
  .addOption(
    new Option(
      "--coordinator-cert <file>",
      "PEM client certificate for the replicas (--auth mtls: shard-data://<group>)",
    ).env("RM_COORDINATOR_CERT"),
  )
  .addOption(
    new Option("--coordinator-key <file>", "PEM key of --coordinator-cert").env("RM_COORDINATOR_KEY"),
  )
  .addOption(
    new Option("--token-file <file>", "first line: an admin token of the group (--auth tokens)").env(
      "RM_TOKEN_FILE",
    ),
  )
  .action(
    async (o: {
      etcd: string;
      namespace: string;
      group: string;
      count?: string;
      file?: string;
      buckets?: string;
      coordinator?: string;
      gzip?: boolean;
      coordinatorCa?: string;
      coordinatorCert?: string;
      coordinatorKey?: string;
      tokenFile?: string;
    }) => {
      if ((o.coordinatorCert === undefined) !== (o.coordinatorKey === undefined))
        usageError("--coordinator-cert and --coordinator-key go together");
      const tls =
        o.coordinatorCa === undefined && o.coordinatorCert === undefined
          ? undefined
          : {
              ...(o.coordinatorCa === undefined
                ? {}
                : { ca: readOrExit("--coordinator-ca", o.coordinatorCa) }),
              ...(o.coordinatorCert === undefined || o.coordinatorKey === undefined
                ? {}
                : {
                    cert: readOrExit("--coordinator-cert", o.coordinatorCert),
                    key: readOrExit("--coordinator-key", o.coordinatorKey),
                  }),
            };
      const uploadToken =
        o.tokenFile === undefined
          ? undefined
          : readOrExit("--token-file", o.tokenFile).toString("utf8").split(/\r?\n/)[0]?.trim();
      const bad = checkName("group", o.group);
      if (bad !== undefined) usageError(bad);
      let records: DataRecordInput[] = [];
      if (o.file !== undefined) {
        for (const line of readFileSync(o.file, "utf8").split("\n")) {
          if (line.trim() === "") continue;
          let r: { id?: unknown; payload?: unknown } | undefined;
          try {
            r = JSON.parse(line) as { id?: unknown; payload?: unknown };
          } catch {
            r = undefined;
          }
          if (typeof r?.id !== "string" || r.id === "" || typeof r.payload !== "string")
            return usageError(
              `bad record line (want {"id": non-empty string, "payload": string}): ${line.slice(0, 200)}`,
            );
          records.push({ id: r.id, payload: r.payload });
        }
      } else {
        const n = Number(o.count ?? "");
        if (!Number.isInteger(n) || n < 1 || n > 1_000_000)
          usageError("--count must be an integer in 1..1000000 (or use --file)");
        records = sequentialRecords(n);
      }
      let buckets: number | undefined;
      if (o.buckets !== undefined) {
        buckets = Number(o.buckets);
        if (!Number.isInteger(buckets) || buckets < 1 || buckets > maxBuckets)
          usageError(`--buckets must be an integer in 1..${maxBuckets}`);
      }
      const client = etcdClient(o);
      const keys = keyLayout(o.namespace);
      try {
        const coordinators =
          o.coordinator !== undefined
            ? o.coordinator.split(",").filter((a) => a !== "")
            : await discoverCoordinators(client, keys);
        if (coordinators.length === 0) {
          // No replica to upload through: only the built-in source can be written directly.
          const raw = await client.get(keys.config(o.group)).string();
          const config = raw === null ? {} : parseRecord(groupConfigSchema, keys.config(o.group), raw);
          if (parseDataSourceConfig(o.group, config.dataSource).kind !== "etcd")
            usageError(
              `group ${o.group} keeps its data in PostgreSQL: start a replica (or give --coordinator) to upload through`,
            );
          const r = await loadShardData(client, keys, o.group, records, { buckets });
          process.stdout.write(
            `loaded ${r.records} records into ${r.prefix} (${r.layout.buckets} buckets, ${r.transactions} transactions; no replica running: written to etcd directly)\n`,
          );
          return;
        }
        const r = await uploadShardData(records, {
          coordinators,
          group: o.group,
          expectedRecords: records.length,
          ...(buckets === undefined ? {} : { buckets }),
          gzip: o.gzip === true,
          ...(tls === undefined ? {} : { tls }),
          ...(uploadToken === undefined ? {} : { token: uploadToken }),
        });
        process.stdout.write(
          `loaded ${r.received} records into group ${o.group} (${r.source} source: ${r.written} written, ${r.unchanged} unchanged, ${r.rejected} rejected, ${r.batches} batches)\n`,
        );
        for (const e of r.errors)
          process.stderr.write(`record ${e.index} (${JSON.stringify(e.id)}) rejected: ${e.message}\n`);
        if (r.rejected > 0) process.exitCode = 1;
      } catch (e) {
        if (e instanceof CoordinatorError && e.code === "invalid_config") usageError(e.message);
        if (e instanceof DataSourceError) usageError(e.message);
        throw e;
      } finally {
        client.close();
      }
    },
  );

program
  .command("repair")
  .description(
    "ask the leader for a fresh, higher version of a group from its live members, every member releasing first (after a corrupt assignment record, or etcd restored from a backup)",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--timeout <ms>", "how long to wait for the leader's new version", "30000")
  .action(async (o: { etcd: string; namespace: string; group: string; timeout: string }) => {
    const client = etcdClient(o);
    try {
      const r = await requestRepair(client, keyLayout(o.namespace), o.group, Number(o.timeout));
      process.stdout.write(`repair ${r.id}: group ${o.group} is at version ${r.version} (${r.phase})\n`);
    } finally {
      client.close();
    }
  });

const config = program
  .command("config")
  .description("the cluster settings every leader applies (<ns>/config)");
config
  .command("get")
  .description("print the cluster settings record")
  .addOption(etcdOption())
  .addOption(nsOption())
  .action(async (o: { etcd: string; namespace: string }) => {
    const client = etcdClient(o);
    try {
      const raw = await client.get(keyLayout(o.namespace).clusterConfig).string();
      process.stdout.write(`${raw ?? "no cluster settings yet (the first leader writes them)"}\n`);
    } finally {
      client.close();
    }
  });
config
  .command("set")
  .description(
    "change the cluster settings; the leader applies them safely (a shorter session timeout expels with the old one until every worker has heard the new one)",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--session-timeout <ms>", "a member silent this long is expelled")
  .option("--heartbeat-interval <ms>", "interval workers heartbeat at")
  .option("--strategy <name>", "default strategy of groups without a config: modulo or sticky")
  .option("--shards <n>", "default shard count of sticky groups")
  .action(
    async (o: {
      etcd: string;
      namespace: string;
      sessionTimeout?: string;
      heartbeatInterval?: string;
      strategy?: string;
      shards?: string;
    }) => {
      const num = (name: string, v: string | undefined) => {
        if (v === undefined) return undefined;
        const n = Number(v);
        if (!Number.isInteger(n) || n <= 0)
          usageError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
        return n;
      };
      if (o.strategy !== undefined && o.strategy !== "modulo" && o.strategy !== "sticky")
        usageError(`--strategy must be modulo or sticky, got ${JSON.stringify(o.strategy)}`);
      const change = {
        sessionTimeoutMs: num("session-timeout", o.sessionTimeout),
        heartbeatIntervalMs: num("heartbeat-interval", o.heartbeatInterval),
        strategy: o.strategy as "modulo" | "sticky" | undefined,
        shards: num("shards", o.shards),
      };
      const client = etcdClient(o);
      try {
        const next = await setClusterSettings(client, keyLayout(o.namespace), change);
        process.stdout.write(`${JSON.stringify(next)}\n`);
      } catch (e) {
        if (e instanceof CoordinatorError && e.code === "invalid_config") usageError(e.message);
        throw e;
      } finally {
        client.close();
      }
    },
  );

/** Writes one change of a group's control record and prints the record. */
async function control(
  o: { etcd: string; namespace: string; group: string },
  change: ControlChange,
): Promise<void> {
  const bad =
    checkName("group", o.group) ?? ("node" in change ? checkName("node_id", change.node) : undefined);
  if (bad !== undefined) usageError(bad);
  const client = etcdClient(o);
  try {
    const next = await changeControl(client, keyLayout(o.namespace), o.group, change);
    process.stdout.write(`${JSON.stringify(next)}\n`);
  } finally {
    client.close();
  }
}

const groupCommand = program
  .command("group")
  .description("a group's operator switches (<ns>/groups/<g>/control)");
const groupConfig = groupCommand
  .command("config")
  .description("a group's config (<ns>/groups/<g>/config): strategy, shard count, data source");
groupConfig
  .command("get")
  .description("print the group's config record")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .action(async (o: { etcd: string; namespace: string; group: string }) => {
    const bad = checkName("group", o.group);
    if (bad !== undefined) usageError(bad);
    const client = etcdClient(o);
    try {
      const raw = await client.get(keyLayout(o.namespace).config(o.group)).string();
      process.stdout.write(`${raw ?? "{}"}\n`);
    } finally {
      client.close();
    }
  });
groupConfig
  .command("set")
  .description(
    "change the group's strategy or shard count (validated; other fields such as dataSource are kept); the leader applies it at once",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .option("--strategy <name>", "modulo or sticky")
  .option("--shards <n>", "shard count (sticky; modulo uses one shard per member)")
  .action(
    async (o: { etcd: string; namespace: string; group: string; strategy?: string; shards?: string }) => {
      const bad = checkName("group", o.group);
      if (bad !== undefined) usageError(bad);
      if (o.strategy === undefined && o.shards === undefined) usageError("give --strategy and/or --shards");
      if (o.strategy !== undefined && o.strategy !== "modulo" && o.strategy !== "sticky")
        usageError(`--strategy must be modulo or sticky, got ${JSON.stringify(o.strategy)}`);
      const shards = o.shards === undefined ? undefined : Number(o.shards);
      if (shards !== undefined && (!Number.isInteger(shards) || shards < 1 || shards > 65_536))
        usageError(`--shards must be an integer in 1..65536, got ${JSON.stringify(o.shards)}`);
      const client = etcdClient(o);
      try {
        const key = keyLayout(o.namespace).config(o.group);
        // Compare-and-swap on the record's revision: a concurrent edit is not overwritten.
        for (;;) {
          const res = await client.get(key).exec();
          const kv = res.kvs[0];
          const current =
            kv === undefined ? {} : (JSON.parse(kv.value.toString()) as Record<string, unknown>);
          const next = {
            ...current,
            ...(o.strategy === undefined ? {} : { strategy: o.strategy }),
            ...(shards === undefined ? {} : { shards }),
          };
          const parsed = groupConfigSchema.safeParse(next);
          if (!parsed.success) usageError(`the resulting config is not valid: ${parsed.error.message}`);
          const cmp =
            kv === undefined
              ? client.if(key, "Create", "==", 0)
              : client.if(key, "Mod", "==", kv.mod_revision);
          const r = await cmp.then(client.put(key).value(JSON.stringify(next))).commit();
          if (r.succeeded) {
            process.stdout.write(`${JSON.stringify(next)}\n`);
            return;
          }
        }
      } finally {
        client.close();
      }
    },
  );

const leaderCommand = program.command("leader").description("the leading replica");
leaderCommand
  .command("step-down")
  .description(
    "ask the leader to resign gracefully: its streams close naming the next leader, workers move there without a version change; it campaigns again behind the others",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--json", "print JSON")
  .action(async (o: EtcdFlags & HttpAuthFlags & { namespace: string; json?: boolean }) => {
    const auth = httpAuth(o);
    const client = etcdClient(o);
    try {
      const target = await leaderConsoleAddress(client, keyLayout(o.namespace));
      const { id } = target;
      let body: { steppedDown?: string; successor?: string; error?: string };
      try {
        body = JSON.parse(
          await readBody(await replicaRequest(target, "/leader/step-down", auth, { method: "POST" })),
        ) as typeof body;
      } catch (e) {
        // 409: it no longer leads (the answer's body says so); anything else as it came.
        process.stderr.write(
          `coordinator: ${id} did not step down: ${e instanceof CoordinatorError ? e.message : String(e)}\n`,
        );
        process.exitCode = 1;
        return;
      }
      process.stdout.write(
        o.json === true
          ? `${JSON.stringify(body)}\n`
          : `${id} stepped down; next leader ${body.successor === "" ? "not known yet" : `at ${body.successor}`}\n`,
      );
    } catch (e) {
      process.stderr.write(
        `coordinator: ${e instanceof CoordinatorError ? e.message : describeEtcdError(e)}\n`,
      );
      process.exitCode = 1;
    } finally {
      client.close();
    }
  });

groupCommand
  .command("pause")
  .description("no new versions and no task dispatch in the group; shards keep running")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .action((o: { etcd: string; namespace: string; group: string }) =>
    control(o, { kind: "pause", paused: true }),
  );
groupCommand
  .command("resume")
  .description("undo pause: versions and task dispatch resume at once")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .action((o: { etcd: string; namespace: string; group: string }) =>
    control(o, { kind: "pause", paused: false }),
  );

program
  .command("drain")
  .description(
    "drain a node: it takes no new tasks, its shards move away through the normal handoff; its worker is told (SDK event drain_requested) and may leave (--undo to stop draining)",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .requiredOption("--node <nodeId>", "the node to drain")
  .option("--undo", "take the node back")
  .action((o: { etcd: string; namespace: string; group: string; node: string; undo?: boolean }) =>
    control(o, { kind: "drain", node: o.node, drained: o.undo !== true }),
  );

program
  .command("capacity")
  .description(
    "set a node's capacity (sticky weight and task slots) over what its worker says, or --clear it",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .requiredOption("--node <nodeId>", "the node")
  .option("--set <n>", "the capacity (0 = no task slots)")
  .option("--clear", "back to the worker's own capacity")
  .action(
    (o: { etcd: string; namespace: string; group: string; node: string; set?: string; clear?: boolean }) => {
      if ((o.set === undefined) === (o.clear !== true))
        usageError("give exactly one of --set <n> and --clear");
      const n = o.set === undefined ? undefined : Number(o.set);
      if (n !== undefined && (!Number.isInteger(n) || n < 0 || n > 1_000_000))
        usageError(`--set must be an integer in 0..1000000, got ${JSON.stringify(o.set)}`);
      return control(o, { kind: "capacity", node: o.node, capacity: n });
    },
  );

addTaskCommands(program, { etcdOption, nsOption, usageError });
const auth = program
  .command("auth")
  .description("credentials of callers (replicas started with --auth tokens)");
const token = auth
  .command("token")
  .description(
    "bearer tokens per group, stored in etcd only as salted scrypt hashes (<ns>/auth/tokens/<group>/<id>); " +
      "roles: worker (join, GetShardInfo, FetchShardData), submit (TaskService), admin (both, and PutShardData)",
  );
token
  .command("create")
  .description("make a token and print it once (it cannot be shown again: only its hash is kept)")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group the token is for")
  .addOption(new Option("--role <role>", "what it allows").choices(tokenRoles).default("worker"))
  .option("--description <text>", "a note shown by list (no secrets)")
  .action(
    async (o: { etcd: string; namespace: string; group: string; role: TokenRole; description?: string }) => {
      const bad = checkName("group", o.group);
      if (bad !== undefined) usageError(bad);
      const keys = keyLayout(o.namespace);
      const { token: secret, record } = await newToken(o.group, o.role, o.description);
      const client = etcdClient(o);
      try {
        await client.put(keys.authToken(o.group, record.id)).value(JSON.stringify(record));
      } finally {
        client.close();
      }
      process.stderr.write(
        `token ${record.id} created for group ${o.group}, role ${o.role}; it is shown once, keep it secret:\n`,
      );
      process.stdout.write(`${secret}\n`);
    },
  );
token
  .command("revoke")
  .description("delete a token: replicas refuse it at once and end the streams it opened (UNAUTHENTICATED)")
  .addOption(etcdOption())
  .addOption(nsOption())
  .requiredOption("--group <group>", "the worker group")
  .requiredOption("--id <id>", "the token id (from create or list)")
  .action(async (o: { etcd: string; namespace: string; group: string; id: string }) => {
    const bad = checkName("group", o.group);
    if (bad !== undefined) usageError(bad);
    if (!/^[a-f0-9]{16}$/.test(o.id)) usageError("--id must be the 16 hex characters list shows");
    const client = etcdClient(o);
    try {
      const res = await client.delete().key(keyLayout(o.namespace).authToken(o.group, o.id)).exec();
      if (res.deleted === "0") {
        process.stderr.write(`coordinator: no token ${o.id} in group ${o.group}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`token ${o.id} of group ${o.group} revoked\n`);
    } finally {
      client.close();
    }
  });
token
  .command("list")
  .description(
    "the tokens of a group (or of every group): id, role, creation time, description; never secrets",
  )
  .addOption(etcdOption())
  .addOption(nsOption())
  .option("--group <group>", "only this group")
  .option("--json", "print JSON lines")
  .action(async (o: { etcd: string; namespace: string; group?: string; json?: boolean }) => {
    const keys = keyLayout(o.namespace);
    const prefix = o.group === undefined ? keys.authTokensPrefix : `${keys.authTokensPrefix}${o.group}/`;
    const client = etcdClient(o);
    try {
      const all = await client.getAll().prefix(prefix).strings();
      for (const raw of Object.values(all)) {
        const r = tokenRecordSchema.safeParse(JSON.parse(raw));
        if (!r.success) continue;
        const { id, group, role, createdAt, description } = r.data;
        process.stdout.write(
          o.json
            ? `${JSON.stringify({ id, group, role, createdAt, description })}\n`
            : `${id}  ${group}  ${role}  ${createdAt}${description === undefined ? "" : `  ${description}`}\n`,
        );
      }
    } finally {
      client.close();
    }
  });

// Every command that talks to etcd takes the same TLS and user flags.
const withSubcommands = (c: Command): Command[] => [c, ...c.commands.flatMap(withSubcommands)];
for (const c of withSubcommands(program))
  if (c.options.some((opt) => opt.long === "--etcd"))
    for (const opt of etcdSecurityOptions()) c.addOption(opt);

// Every command that reads the leader's HTTP listener takes the same token and CA flags.
for (const c of withSubcommands(program))
  if (["groups", "members", "shards", "watch", "step-down"].includes(c.name()) && c.parent !== null)
    for (const opt of httpAuthOptions()) c.addOption(opt);

// `coordinator --help` shows the replica's flags too (serve is the default command).
const serveCommand = program.commands.find((c) => c.name() === "serve");
if (serveCommand !== undefined)
  program.addHelpText(
    "after",
    () =>
      `\nReplica flags (coordinator [serve] [options]):\n${serveCommand.helpInformation().split("\n").slice(1).join("\n")}`,
  );

/** Edit distance (Levenshtein) between two short words. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (cur[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

// A word where a command goes that names none would otherwise reach the default command
// (serve) as a stray argument: say so, with the nearest command.
const word = process.argv[2];
if (
  word !== undefined &&
  !word.startsWith("-") &&
  !program.commands.some((c) => c.name() === word || c.aliases().includes(word))
) {
  const names = program.commands.map((c) => c.name());
  const nearest = names.map((n) => [n, distance(word, n)] as const).sort((x, y) => x[1] - y[1])[0];
  const hint =
    nearest !== undefined && nearest[1] <= Math.max(2, Math.floor(word.length / 3))
      ? ` (did you mean ${nearest[0]}?)`
      : "";
  process.stderr.write(
    `coordinator: unknown command ${JSON.stringify(word)}${hint}; see coordinator --help\n`,
  );
  process.exit(2);
}

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
