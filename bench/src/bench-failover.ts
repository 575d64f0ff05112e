import { wallNow } from "./follow-worker.js";
import type { Reporter, Row } from "./report.js";
import { round, summarize } from "./stats.js";
import { RmCluster, startEtcd } from "./targets.js";
import { WorkerFleet } from "./worker-tracker.js";

const LEADER_TTL_SEC = 3;
export const FAILOVER_FLAGS = [
  "--leader-ttl",
  String(LEADER_TTL_SEC),
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  "5000",
  "--member-lease-ttl",
  "15",
  "--rebalance-delay",
  "1000",
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;

/**
 * Leader SIGKILL, then SIGTERM of the next leader, with N raw workers attached (3 replicas,
 * one etcd): time from the signal until each worker is welcomed again, and whether that
 * Welcome resumed the membership on the same version.
 */
export async function benchFailover(rep: Reporter, smoke: boolean): Promise<void> {
  const n = smoke ? 100 : 1000;
  await using etcd = await startEtcd();
  await using cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 3, args: FAILOVER_FLAGS });
  const fleet = new WorkerFleet();
  try {
    rep.progress(`failover: ${n} workers`);
    fleet.spawn(cluster.addresses, "bench", "w", n);
    const version = await fleet.stable(n, 1500, 120_000);
    const rows: Row[] = [];
    for (const sig of ["SIGKILL", "SIGTERM"] as const) {
      const leader = await cluster.waitForLeader();
      const t0 = wallNow();
      const p0 = performance.now();
      leader.signal(sig);
      const newLeader = await cluster.waitForLeader({ not: leader, timeoutMs: 30_000 });
      const electedMs = performance.now() - p0;
      // The new leader's own clock, from its log: when its campaign won (`elected`) and when
      // it served (`leading`, after loading every group). Polling /status above also counts
      // how long a replica busy with a reconnect storm takes to answer.
      const logged = (event: string) => {
        // pino's isoTime: "2026-11-25T07:30:00.123Z".
        const at = (l: { readonly [key: string]: unknown }) =>
          typeof l.time === "string" ? Date.parse(l.time) : Number.NaN;
        const line = newLeader.logs.find((l) => l.event === event && at(l) > t0);
        return line === undefined ? "–" : Math.round(at(line) - t0);
      };
      const back = () =>
        [...fleet.workers.values()].map((w) => w.events.find((e) => e.t === "welcome" && e.at > t0));
      await fleet.until(
        `every worker reattached after ${sig}`,
        () => back().every((e) => e !== undefined),
        60_000,
      );
      await leader.exited;
      const welcomes = back().filter((e) => e !== undefined);
      const reattach = summarize(welcomes.map((e) => e.at - t0));
      const unchanged = welcomes.filter((e) => e.version === version && e.resumed === true).length;
      rows.push({
        signal: sig,
        workers: n,
        "new leader after ms": Math.round(electedMs),
        "elected (its log) ms": logged("elected"),
        "serving (its log) ms": logged("leading"),
        "of it loading ms": (() => {
          const l = newLeader.logs.findLast((x) => x.event === "leader_started");
          return typeof l?.loadMs === "number" ? l.loadMs : "–";
        })(),
        reattached: welcomes.length,
        "p50 ms": Math.round(reattach.p50),
        "p99 ms": Math.round(reattach.p99),
        "max ms": Math.round(reattach.max),
        "p99 / leader TTL": round(reattach.p99 / (LEADER_TTL_SEC * 1000), 2),
        "same version & resumed": `${unchanged}/${welcomes.length}`,
        leader: `${leader.id} -> ${newLeader.id}`,
      });
      // Let the new leader settle (no version bump expected) before the next fault.
      const after = await fleet.stable(n, 1500, 60_000);
      if (after !== version) rows.push({ signal: sig, note: `version changed ${version} -> ${after}` });
    }
    rep.table({
      measurement: "failover",
      title: `Failover: leader killed / stopped with ${n} connected workers (3 replicas)`,
      settings: { workers: n, replicas: 3, flags: FAILOVER_FLAGS.join(" "), version },
      rows,
      notes: [
        "new leader after: until /status of a replica said leader (polled every 25 ms); elected / serving (its log): the new leader's own log lines `elected` and `leading`, minus the signal's time (one machine, one clock); of it loading: its leader_started loadMs (cluster settings and every group read from etcd, members adopted).",
        "reattach = from the signal until the worker's next Welcome; the workers follow x-shard-leader and otherwise",
        "rotate through the replicas with full-jitter backoff (the SDK's backoffDelay: 50 ms base, 500 ms cap).",
      ],
    });
  } finally {
    await fleet.stop();
  }
}
