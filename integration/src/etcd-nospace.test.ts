import { spawnSync } from "node:child_process";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EtcdCluster, getFreePorts, startEtcdCluster } from "./harness/index.js";
import { RmProcess } from "./support/rm-cluster.js";
import { fastFlags } from "./support/test-env.js";

// etcd out of space (its NOSPACE alarm, raised at --quota-backend-bytes) refuses every write
// and lease grant until an operator compacts, defragments and disarms the alarm. A replica
// must say so in one line per retry at a slow, steady pace, count it in its metrics, and
// lead as soon as the operator has fixed etcd. Real etcd with a small quota.
const quotaBytes = 4 * 1024 * 1024;
let etcd: EtcdCluster;
let client: Etcd3;
beforeAll(async () => {
  etcd = await startEtcdCluster({ size: 1, extraArgs: ["--quota-backend-bytes", String(quotaBytes)] });
  client = new Etcd3({ hosts: etcd.endpoints });
});
afterAll(async () => {
  client?.close();
  await etcd?.stop();
});

function etcdctl(...args: string[]): string {
  const r = spawnSync("etcdctl", ["--endpoints", etcd.endpoints.join(","), ...args], {
    encoding: "utf8",
    timeout: 20_000,
  });
  if (r.status !== 0) throw new Error(`etcdctl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

describe("etcd out of space (NOSPACE)", () => {
  it("is logged at a steady pace with its kind, counted, and the replica leads once an operator fixes etcd", async () => {
    // Fill etcd past its quota until it raises the alarm.
    const big = "x".repeat(1024 * 1024);
    let raised = false;
    for (let i = 0; i < 32 && !raised; i++) {
      await client
        .put(`/filler/${i}`)
        .value(big)
        .catch(() => {
          raised = true;
        });
    }
    expect(raised).toBe(true);
    expect(etcdctl("alarm", "list")).toContain("NOSPACE");

    const [port, httpPort] = await getFreePorts(2);
    const r = new RmProcess({
      id: "rm-nospace",
      etcd: etcd.endpoints,
      namespace: "/nospace",
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: fastFlags,
    });
    r.start();
    try {
      const first = await r.waitForLog((l) => l.event === "campaign_failed" && l.kind === "nospace", 20_000);
      expect(first.level).toBe(50); // error: an operator must act
      expect(first.err).toContain("database space exceeded");
      // Slow and steady: 2 s, then 4, 8, 10 s (less at most 20% jitter), never a loop.
      await new Promise((res) => setTimeout(res, 8000));
      const failures = r.logs.filter((l) => l.event === "campaign_failed");
      expect(failures.length).toBeGreaterThanOrEqual(2);
      expect(failures.length).toBeLessThanOrEqual(5);
      for (const l of failures) {
        expect(l.kind).toBe("nospace");
        expect(l.retryInMs as number).toBeGreaterThanOrEqual(1600);
        expect(l.retryInMs as number).toBeLessThanOrEqual(10_000);
      }
      // etcd answers (reads work): the replica is connected, and says what fails.
      const st = (await r.status()) as unknown as {
        role: string;
        etcd: { state: string; lastError: { kind: string; op: string } | null };
      };
      expect(st.role).toBe("follower");
      expect(st.etcd.state).toBe("connected");
      expect(st.etcd.lastError?.kind).toBe("nospace");
      const metrics = await (await fetch(`${r.httpUrl}/metrics`)).text();
      const counted =
        /^shard_etcd_errors_total\{(?=[^}]*op="lease_grant")(?=[^}]*kind="nospace")[^}]*\} (\d+)$/m.exec(
          metrics,
        );
      expect(Number(counted?.[1])).toBeGreaterThanOrEqual(2);
      expect(metrics).toMatch(
        /^shard_etcd_request_duration_seconds_count\{[^}]*op="lease_grant"[^}]*\} \d+$/m,
      );

      // The operator's fix, as the README describes it.
      await client.delete().prefix("/filler/");
      const rev = (await client.get("any").exec()).header.revision;
      etcdctl("compact", rev);
      etcdctl("defrag");
      etcdctl("alarm", "disarm");
      const fixedAt = performance.now();
      // The next retry comes within the 10 s cap.
      const led = await r.waitForLog((l) => l.event === "leading", 20_000);
      expect(led.at).toBeGreaterThan(fixedAt);
    } finally {
      await r.kill();
    }
  });
});
