import { Etcd3 } from "etcd3";
import { NodeChild } from "./children.js";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";
import { RmCluster, startEtcd } from "./targets.js";

/**
 * Leader flags for a fresh deployment: a short rebalance delay, since the goal (a group fully
 * joined with one active version) includes the debounce after the last join.
 */
const COLDSTART_FLAGS = [
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  "10000",
  "--member-lease-ttl",
  "30",
  "--rebalance-delay",
  "500",
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;

/** LeaseKeepAlive requests etcd has received so far (its own /metrics on the client URL). */
async function etcdKeepAlives(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith("grpc_server_msg_received_total") && line.includes('grpc_method="LeaseKeepAlive"'))
      sum += Number(line.split(" ").at(-1));
  return sum;
}

/** Distinct leases of the group's member keys. */
async function memberLeases(endpoints: readonly string[], group: string): Promise<number> {
  const client = new Etcd3({ hosts: [...endpoints] });
  try {
    const r = await client.getAll().prefix("").exec();
    return new Set(
      r.kvs.filter((kv) => kv.key.toString().includes(`/groups/${group}/members/`)).map((kv) => kv.lease),
    ).size;
  } finally {
    client.close();
  }
}

/** Keep-alives are counted over this window after the version is active: one member lease TTL. */
const KEEPALIVE_WINDOW_MS = 30_000;

/**
 * Cold start: N workers that have never joined say Hello at the same moment (one load
 * generator process, 100 streams per HTTP/2 connection). Measured: the time until every
 * stream is welcomed (the load generator's clock, from its last Hello written), and until
 * the leader activates the first version that covers all N members (the leader's log, on
 * this process's clock). Also the etcd requests the joins cost (member puts per transaction).
 */
export async function benchColdStart(rep: Reporter, smoke: boolean): Promise<void> {
  const sizes = smoke ? [200] : [1000, 5000];
  const rows: Row[] = [];
  for (const n of sizes) {
    rep.progress(`coldstart: ${n} workers join at once`);
    await using etcd = await startEtcd();
    const cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 1, args: COLDSTART_FLAGS });
    try {
      const leader = await cluster.waitForLeader();
      const fromLog = leader.logs.length;
      const gen = new NodeChild("loadgen.js", [
        "load",
        "--target",
        leader.address,
        "--transport",
        "grpc",
        "--streams",
        String(n),
        "--pattern",
        "rate",
        "--interval-ms",
        "1000",
        "--group",
        "cold",
        "--per-channel",
        "100",
        "--warmup-ms",
        "100",
        "--measure-ms",
        "15000",
      ]);
      try {
        const connected = (await gen.waitFor("connected", 180_000)) as unknown as {
          connected: number;
          ms: number;
        };
        const connectedAt = performance.now();
        const written = await leader
          .waitForLog(
            (l) => l.event === "version_written" && l.group === "cold" && l.members === n,
            30_000,
            fromLog,
          )
          .catch((e: unknown) => {
            const seen = leader.logs
              .slice(fromLog)
              .filter((l) => l.event === "version_written" || l.event === "member_joined")
              .map((l) => `${l.event} members=${String(l.members)} batch=${String(l.batch)}`);
            const byEvent = new Map<string, number>();
            for (const l of leader.logs.slice(fromLog)) {
              const k = `${String(l.event)}${l.code === undefined ? "" : ` ${String(l.code)}: ${String(l.details)}`}`;
              byEvent.set(k, (byEvent.get(k) ?? 0) + 1);
            }
            throw new Error(
              `${String(e)}\nwelcomed ${connected.connected} in ${connected.ms} ms\n${seen.slice(-5).join("\n")}\n${[...byEvent].map(([k, v]) => `${v} x ${k}`).join("\n")}`,
            );
          });
        // A version nobody must release first is written active (no version_active line).
        const active =
          written.phase === "active"
            ? written
            : await leader.waitForLog(
                (l) => l.event === "version_active" && l.group === "cold" && l.version === written.version,
                30_000,
                fromLog,
              );
        const joined = leader.logs
          .slice(fromLog)
          .filter((l) => l.event === "member_joined" && l.group === "cold");
        const batches = joined.map((l) => Number(l.batch ?? 1));
        const versions = new Set(
          leader.logs
            .slice(fromLog)
            .filter((l) => l.event === "version_written" && l.group === "cold")
            .map((l) => l.version),
        );
        const leases = await memberLeases(etcd.endpoints, "cold");
        let keepAlivesPerTtl: number | string = "-";
        if (!smoke) {
          const endpoint = etcd.endpoints[0] ?? "";
          const k0 = await etcdKeepAlives(endpoint);
          await new Promise((r) => setTimeout(r, KEEPALIVE_WINDOW_MS));
          keepAlivesPerTtl = (await etcdKeepAlives(endpoint)) - k0;
        }
        rows.push({
          workers: n,
          welcomed: connected.connected,
          "all welcomed ms": connected.ms,
          "active version ms": Math.round(connected.ms + (active.at - connectedAt)),
          "versions written": versions.size,
          "largest join batch": Math.max(...batches),
          "mean join batch": round(batches.reduce((a, b) => a + b, 0) / Math.max(1, batches.length), 1),
          "member leases": leases,
          "keep-alives per TTL": keepAlivesPerTtl,
        });
      } finally {
        await gen.kill();
      }
    } finally {
      await cluster.stop();
    }
  }
  rep.table({
    measurement: "coldstart",
    title: "Cold start: N first-time workers say Hello at once",
    settings: { leaderFlags: COLDSTART_FLAGS.join(" "), streamsPerConnection: 100 },
    rows,
    notes: [
      "'active version ms' counts from the load generator's last Hello to the activation of the first version with all N members; it includes the 500 ms rebalance delay.",
      "Joins are batched: the Hellos that arrive while a batch is written share one member lease (one LeaseGrant per batch) and their member records go 100 per transaction; 'mean join batch' is weighted by member.",
      "'keep-alives per TTL': LeaseKeepAlive requests etcd received (its /metrics) over one member lease TTL (30 s) after the version was active, every lease of the process included (the election's too); not measured with --smoke.",
    ],
  });
}
