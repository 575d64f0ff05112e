import { keyLayout } from "@org/coordinator";
import { Etcd3 } from "etcd3";
import { wallNow } from "./follow-worker.js";
import type { Reporter, Row } from "./report.js";
import { round, summarize } from "./stats.js";
import { RmCluster, startEtcd } from "./targets.js";
import { WorkerFleet } from "./worker-tracker.js";

const SESSION_TIMEOUT_MS = 5000;
const REBALANCE_DELAY_MS = 1000;
const FLAGS = [
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  String(SESSION_TIMEOUT_MS),
  "--member-lease-ttl",
  "15",
  "--rebalance-delay",
  String(REBALANCE_DELAY_MS),
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;

/** Worker SIGKILL until its member key is deleted in etcd (watched), per killed worker. */
async function expulsion(rep: Reporter, cluster: RmCluster, client: Etcd3, killed: number): Promise<Row> {
  const group = "detect";
  const prefix = keyLayout(cluster.namespace).membersPrefix(group);
  const deleted = new Map<string, number>();
  const watcher = await client.watch().prefix(prefix).create();
  watcher.on("delete", (kv) => deleted.set(kv.key.toString().slice(prefix.length), wallNow()));
  const fleet = new WorkerFleet();
  try {
    // One process per worker: killing the process is killing the worker.
    const gens = Array.from({ length: killed }, (_, i) =>
      fleet.spawn(cluster.addresses, group, `k${i}-`, 1),
    ).flat();
    await fleet.stable(killed, 1500, 60_000);
    rep.progress(`detection: SIGKILL ${killed} workers`);
    const t0 = wallNow();
    for (const g of gens) g.signal("SIGKILL");
    const nodes = [...fleet.workers.keys()];
    await fleet.until(
      "every killed worker expelled",
      () => nodes.every((n) => deleted.has(n)),
      4 * SESSION_TIMEOUT_MS,
    );
    const s = summarize(nodes.map((n) => (deleted.get(n) ?? Number.NaN) - t0));
    return {
      measurement: "worker SIGKILL -> member key deleted",
      samples: s.count,
      "p50 ms": Math.round(s.p50),
      "p99 ms": Math.round(s.p99),
      "max ms": Math.round(s.max),
      "p50 / session timeout": round(s.p50 / SESSION_TIMEOUT_MS, 2),
      "max / session timeout": round(s.max / SESSION_TIMEOUT_MS, 2),
    };
  } finally {
    await watcher.cancel();
    await fleet.stop();
  }
}

/**
 * One worker joins a group of n: time from its Welcome until every affected worker (shards
 * changed, the joiner included) holds the new version as active; and which workers stopped
 * shards on the way ("paused": a pending version took one of their shards, or changed the
 * shard count, which re-partitions every item).
 */
async function membershipChange(
  rep: Reporter,
  cluster: RmCluster,
  client: Etcd3,
  strategy: "sticky" | "modulo",
  n: number,
): Promise<Row> {
  const group = `change-${strategy}`;
  await client
    .put(keyLayout(cluster.namespace).config(group))
    .value(JSON.stringify({ strategy, shards: 256 }));
  const fleet = new WorkerFleet();
  try {
    fleet.spawn(cluster.addresses, group, "w", n);
    const v0 = await fleet.stable(n, 1500, 120_000);
    const before = new Map(
      [...fleet.workers].map(([k, w]) => [k, { shards: [...w.shards], total: w.total }]),
    );
    const mark = new Map([...fleet.workers].map(([k, w]) => [k, w.events.length]));
    rep.progress(`detection: one join into ${n} workers (${strategy})`);
    fleet.spawn(cluster.addresses, group, "joiner", 1);
    await fleet.until("the joiner's welcome", () => fleet.workers.size > n, 30_000);
    const joiner = [...fleet.workers.keys()].find((k) => !before.has(k)) ?? "";
    const tJoin = fleet.workers.get(joiner)?.events.find((e) => e.t === "welcome")?.at ?? Number.NaN;
    const v1 = await fleet.stable(n + 1, 2000, 60_000);
    const activeAt: number[] = [];
    let affected = 0;
    let paused = 0;
    let unaffected = 0;
    let unaffectedPaused = 0;
    for (const [node, w] of fleet.workers) {
      const b = before.get(node);
      const since = w.events.slice(mark.get(node) ?? 0);
      const changed = b === undefined || b.total !== w.total || b.shards.join() !== w.shards.join();
      const stopped =
        b !== undefined &&
        since.some(
          (e) =>
            e.phase === "pending" &&
            (e.total !== b.total || b.shards.some((s) => !(e.shards ?? []).includes(s))),
        );
      if (stopped) paused++;
      if (changed) {
        affected++;
        const at = since.find((e) => e.version === v1 && e.phase === "active")?.at;
        if (at !== undefined) activeAt.push(at - tJoin);
      } else {
        unaffected++;
        if (stopped) unaffectedPaused++;
      }
    }
    const s = summarize(activeAt);
    return {
      strategy,
      workers: n,
      versions: `${v0} -> ${v1}`,
      affected,
      "p50 ms": Math.round(s.p50),
      "p99 ms": Math.round(s.p99),
      "max ms": Math.round(s.max),
      "max - rebalance delay ms": Math.round(s.max - REBALANCE_DELAY_MS),
      "workers that paused": paused,
      "unaffected paused": `${unaffectedPaused}/${unaffected}`,
    };
  } finally {
    await fleet.stop();
  }
}

export async function benchDetection(rep: Reporter, smoke: boolean): Promise<void> {
  await using etcd = await startEtcd();
  await using cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 1, args: FLAGS });
  const client = new Etcd3({ hosts: etcd.endpoints });
  try {
    rep.table({
      measurement: "detection",
      title: "Worker kill to expulsion",
      settings: { flags: FLAGS.join(" "), sessionTimeoutMs: SESSION_TIMEOUT_MS },
      rows: [await expulsion(rep, cluster, client, smoke ? 2 : 5)],
      notes: [
        "the leader sweeps every heartbeat-interval/4 (250 ms) and then deletes the key in one fenced Txn.",
      ],
    });
    const n = smoke ? 50 : 200;
    const rows: Row[] = [];
    for (const strategy of ["sticky", "modulo"] as const)
      rows.push(await membershipChange(rep, cluster, client, strategy, n));
    rep.table({
      measurement: "membership-change",
      title: `One join into ${n} workers: until every affected worker is active`,
      settings: {
        flags: FLAGS.join(" "),
        rebalanceDelayMs: REBALANCE_DELAY_MS,
        measuredFrom: "the joiner's Welcome",
      },
      rows,
      notes: [
        "affected = shard list or shard count changed (the joiner included); 'paused' = a pending version took shards from it.",
      ],
    });
  } finally {
    client.close();
  }
}
