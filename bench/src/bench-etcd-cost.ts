import { NodeChild } from "./children.js";
import { diffCounts, scrapeEtcd } from "./etcd-metrics.js";
import type { LoadResult } from "./load-streams.js";
import type { Reporter, Row } from "./report.js";
import { round } from "./stats.js";
import { startEtcd, startLeader } from "./targets.js";

const LEASE_TTL_SEC = 15;
const FLAGS = [
  "--heartbeat-interval",
  "1000",
  "--session-timeout",
  "5000",
  "--member-lease-ttl",
  String(LEASE_TTL_SEC),
  "--rebalance-delay",
  "1000",
  "--strategy",
  "sticky",
  "--shards",
  "256",
] as const;
const WRITES = new Set(["Put", "Txn", "DeleteRange", "LeaseGrant", "LeaseRevoke"]);

/**
 * etcd requests by kind at steady state, from etcd's own counters, over one member-lease TTL:
 * heartbeats must cause no writes, and member keep-alives must stay at about 3 per member per
 * TTL (the leader renews each lease every TTL/3 while it hears the member).
 */
export async function benchEtcdCost(rep: Reporter, smoke: boolean): Promise<void> {
  const members = smoke ? 100 : 1000;
  const windowMs = smoke ? 6000 : LEASE_TTL_SEC * 1000;
  await using etcd = await startEtcd();
  const url = etcd.endpoints[0] ?? "";
  const leader = await startLeader(etcd, FLAGS);
  try {
    rep.progress(`etcd-cost: ${members} members, ${windowMs} ms window`);
    const gen = new NodeChild("loadgen.js", [
      "load",
      "--target",
      leader.address,
      "--transport",
      "grpc",
      "--streams",
      String(members),
      "--pattern",
      "rate",
      "--interval-ms",
      "1000",
      "--group",
      "bench",
      "--per-channel",
      "100",
      // Past the joins, the version write (rebalance delay) and the first keep-alive round.
      "--warmup-ms",
      String(smoke ? 3000 : LEASE_TTL_SEC * 1000),
      "--measure-ms",
      String(windowMs),
    ]);
    try {
      await gen.waitFor("measuring", 180_000);
      const a = await scrapeEtcd(url);
      const t0 = performance.now();
      const result = (await gen.waitFor("result", windowMs + 30_000)) as unknown as LoadResult;
      const b = await scrapeEtcd(url);
      const sec = (performance.now() - t0) / 1000;
      const d = diffCounts(a, b);
      const rows: Row[] = [...d.entries()]
        .sort((x, y) => y[1] - x[1])
        .map(([method, n]) => ({
          method,
          kind: WRITES.has(method) ? "write" : "read/keep-alive",
          requests: n,
          "per s": round(n / sec, 1),
          "per member per TTL": round((n / sec) * (LEASE_TTL_SEC / members), 2),
        }));
      const writes = [...d.entries()].filter(([m]) => WRITES.has(m)).reduce((s, [, n]) => s + n, 0);
      rows.push({
        method: "(heartbeats acked)",
        kind: "not etcd",
        requests: result.acks,
        "per s": round(result.acksPerSec, 1),
        "per member per TTL": round((result.acksPerSec * LEASE_TTL_SEC) / members, 2),
      });
      rep.table({
        measurement: "etcd-cost",
        title: `etcd requests at steady state, ${members} members (from etcd's /metrics)`,
        settings: { members, windowSec: round(sec, 1), leaderFlags: FLAGS.join(" ") },
        rows,
        notes: [
          `writes (Put/Txn/DeleteRange/LeaseGrant/LeaseRevoke) in the window: ${writes}` +
            ` (${writes === 0 ? "heartbeats cause no writes" : "NOT zero"}); LeaseKeepAlive includes the leader's own election lease (TTL 3 s).`,
        ],
      });
    } finally {
      await gen.kill();
    }
  } finally {
    await leader.stop();
  }
}
