import { spawnSync } from "node:child_process";
import { status } from "@grpc/grpc-js";
import { keyLayout, loadShardData } from "@org/coordinator";
import { AssignmentPhase } from "@org/proto";
import { describe, expect, it } from "vitest";
import { assignmentOf, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { fetchShardData, getShardInfo, RawStream } from "./support/raw-client.js";
import { coordinatorBin, type RmCluster } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// Real etcd (3 members), real replica processes killed for real. Timings are short so the
// suite stays fast, but keep the ratios of the defaults: session timeout well above the
// leader TTL, so a leader failover never outlasts a worker's self-fence.
const env = useTestEnv(3);

const cluster = (extra: string[] = []) => startCluster(env, extra);
const worker = (c: RmCluster, nodeId: string, group = "g1") => startWorker(env, c, nodeId, group);
const assignment = (c: RmCluster, group = "g1") => assignmentOf(env, c, group);

describe("coordinator replicas", () => {
  it("only the leader accepts HeartbeatStream; followers refuse with UNAVAILABLE naming it", async () => {
    const c = await cluster();
    const leader = await c.waitForLeader();
    // Followers learn the leader from their watch on the election prefix; once they know it
    // (their /status says so), a refusal must name it.
    for (const r of c.replicas) {
      await until(
        () => r.status().catch(() => undefined),
        (st) => st?.leader?.address === leader.address,
      );
    }
    for (const r of c.replicas) {
      const s = new RawStream(r.address);
      env.cleanup(() => s.close());
      s.hello("g1", `probe-${r.id}`);
      if (r === leader) {
        const welcome = await s.waitFor((m) => m.kind.case === "welcome");
        expect(welcome.kind.case === "welcome" && welcome.kind.value.leaderId).toBe(leader.id);
      } else {
        const ended = await s.ended;
        expect(ended.code).toBe(status.UNAVAILABLE);
        expect(ended.metadata.get("x-shard-leader")).toEqual([leader.address]);
      }
    }
    // Counted where an operator looks: each follower's refusal by code, and the leader's
    // election lease keep-alive round trips.
    const scrape = async (r: (typeof c.replicas)[number]) => (await fetch(`${r.httpUrl}/metrics`)).text();
    for (const r of c.replicas.filter((x) => x !== leader))
      expect(await scrape(r)).toMatch(/^shard_streams_refused_total\{[^}]*code="UNAVAILABLE"[^}]*\} [1-9]/m);
    expect(await scrape(leader)).toMatch(
      /^shard_lease_keepalive_seconds_count\{[^}]*lease="election"[^}]*\} [1-9]/m,
    );
  });

  it("exports the releases a pending version waits for, until they come", async () => {
    const c = await cluster(["--strategy", "sticky", "--shards", "4"]);
    const leader = await c.waitForLeader();
    const raw = (nodeId: string) => {
      const s = new RawStream(leader.address);
      const beat = setInterval(() => s.heartbeat(nodeId), 200);
      env.cleanup(() => {
        clearInterval(beat);
        s.close();
      });
      s.hello("g-rel", nodeId);
      return s;
    };
    const a = raw("a");
    await until(
      () => assignment(c, "g-rel"),
      (x) => x?.phase === "active" && (x.owners.a?.length ?? 0) === 4,
    );
    raw("b"); // b joins: a must release shards, and (a raw client) does not until told to here
    const pending = await until(
      () => assignment(c, "g-rel"),
      (x) => x?.phase === "pending",
    );
    const metric = (name: string) => new RegExp(`^${name}\\{[^}]*group="g-rel"[^}]*\\} (\\d+)$`, "m");
    const scrape = async () => (await fetch(`${leader.httpUrl}/metrics`)).text();
    const during = await scrape();
    expect(metric("shard_group_releases_awaited").exec(during)?.[1]).toBe("1");
    expect(metric("shard_group_pending").exec(during)?.[1]).toBe("1");
    a.send({ kind: { case: "release", value: { version: BigInt(pending?.version ?? 0) } } });
    await until(
      () => assignment(c, "g-rel"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    const after = await until(scrape, (t) => metric("shard_group_pending").exec(t)?.[1] === "0");
    expect(metric("shard_group_releases_awaited").exec(after)?.[1]).toBe("0");
  });

  it("persists membership and versions in etcd; GetShardInfo answers from any replica", async () => {
    const c = await cluster();
    const [a, b] = [await worker(c, "w-a"), await worker(c, "w-b")];
    const active = await until(
      () => assignment(c),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    expect(active?.owners).toEqual({ "w-a": [0], "w-b": [1] });
    await until(
      () => a.assignment.running.length + b.assignment.running.length,
      (n) => n === 2,
    );
    const member = JSON.parse(
      (await env.client.get(`${c.namespace}/groups/g1/members/w-a`).string()) ?? "{}",
    ) as Record<string, unknown>;
    expect(member).toMatchObject({ nodeId: "w-a", group: "g1", capacity: 1 });
    expect(member.sessionHash).toMatch(/^[0-9a-f]{64}$/);
    const lease = (await env.client.get(`${c.namespace}/groups/g1/members/w-a`).exec()).kvs[0]?.lease;
    expect(lease).not.toBe("0");
    for (const r of c.replicas) {
      const info = await getShardInfo(r.address, "g1", "w-b");
      expect(info.totalShards).toBe(2);
      expect(info.shardId).toBe(1);
      expect(Number(info.version)).toBe(active?.version);
      expect(info.phase).toBe(AssignmentPhase.ACTIVE);
    }
  });

  it("leader SIGKILL: a new leader within about the TTL, version and owners unchanged", async () => {
    const c = await cluster();
    const workers = [await worker(c, "k-1"), await worker(c, "k-2"), await worker(c, "k-3")];
    const before = await until(
      () => assignment(c),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 3,
    );
    const leader = await c.waitForLeader();
    const started = workers.map(() => 0);
    workers.forEach((w, i) => {
      void (async () => {
        for await (const e of w.events()) if (e.type === "shard_started") started[i] = (started[i] ?? 0) + 1;
      })();
    });
    const t0 = performance.now();
    await leader.kill();
    const next = await c.waitForLeader({ not: leader });
    const failoverMs = performance.now() - t0;
    // Lease TTL 2 s: the dead leader's key expires within 2 s of its last keep-alive.
    expect(failoverMs).toBeLessThan(2000 * 2.5);
    // Every worker reattaches to the new leader by itself...
    await until(
      () => Promise.all(c.replicas.filter((r) => r.running).map((r) => r.status())),
      (s) => s.some((x) => x.role === "leader"),
    );
    await until(
      () => workers.every((w) => w.leaderEpoch > 0 && w.assignment.running.length === 1),
      (ok) => ok,
    );
    await new Promise((r) => setTimeout(r, 1500)); // past a rebalance delay: nothing moves
    const after = await assignment(c);
    expect(after?.version).toBe(before?.version);
    expect(after?.owners).toEqual(before?.owners);
    expect(started).toEqual([0, 0, 0]); // no handler restarted anywhere
    console.log(
      `leader SIGKILL -> new leader ${next.id} in ${Math.round(failoverMs)} ms (leader TTL 2000 ms)`,
    );
  });

  it("leader SIGTERM: resigns at once, handoff well under a second, exit code 0", async () => {
    const c = await cluster();
    await worker(c, "t-1");
    const before = await until(
      () => assignment(c),
      (x) => x?.phase === "active",
    );
    const leader = await c.waitForLeader();
    const t0 = performance.now();
    const code = await leader.stop();
    const next = await c.waitForLeader({ not: leader });
    const handoffMs = performance.now() - t0;
    expect(code).toBe(0);
    expect(handoffMs).toBeLessThan(1000);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await assignment(c))?.version).toBe(before?.version);
    console.log(`leader SIGTERM -> new leader ${next.id} in ${Math.round(handoffMs)} ms`);
  });

  it("leader SIGTERM names the next leader as its streams close; that replica serves a Hello sent at once", async () => {
    const c = await cluster();
    const leader = await c.waitForLeader();
    // A successor can only be named once another replica is a candidate: wait until all
    // three campaign (a replica that just started may not have put its key yet).
    await until(
      () => env.client.getAll().prefix(keyLayout(c.namespace).electionPrefix).keys(),
      (keys) => keys.length === 3,
    );
    const s = new RawStream(leader.address);
    env.cleanup(() => s.close());
    s.hello("g-term", "n-1");
    await s.waitFor((m) => m.kind.case === "welcome");
    const beat = setInterval(() => s.heartbeat("n-1"), 400);
    env.cleanup(() => clearInterval(beat));
    const stopping = leader.stop();
    const ended = await s.ended;
    expect(ended.code).toBe(status.UNAVAILABLE);
    const named = String(ended.metadata.get("x-shard-leader")[0] ?? "");
    const others = c.replicas.filter((r) => r !== leader).map((r) => r.address);
    expect(others).toContain(named);
    // Straight to the named replica, which may still be loading its groups: it holds the
    // Hello until it serves instead of refusing it.
    const s2 = new RawStream(named);
    env.cleanup(() => s2.close());
    s2.hello("g-term", "n-2");
    const first = await Promise.race([
      s2.waitFor((m) => m.kind.case === "welcome").then(() => "welcome"),
      s2.ended.then((e) => `ended ${status[e.code]}: ${e.details}`),
    ]);
    expect(first).toBe("welcome");
    expect((await c.waitForLeader({ not: leader })).address).toBe(named);
    expect(await stopping).toBe(0);
  });

  it("leader paused past its TTL: it steps down on resume and never writes as a stale leader", async () => {
    const c = await cluster();
    await worker(c, "p-1");
    await until(
      () => assignment(c),
      (x) => x?.phase === "active",
    );
    const old = await c.waitForLeader();
    const oldEpoch = (await old.status()).leaderEpoch;
    const logFrom = old.logs.length;
    old.pause();
    const next = await c.waitForLeader({ not: old, timeoutMs: 15_000 });
    const newEpoch = (await next.status()).leaderEpoch;
    expect(newEpoch).toBeGreaterThan(oldEpoch);
    // A membership change under the new leader produces a write fenced on the new epoch.
    await worker(c, "p-2");
    old.resume();
    await old.waitForLog((l) => l.event === "leadership_lost", 10_000, logFrom);
    await until(
      () => old.status(),
      (s) => s.role === "follower",
    );
    const a = await until(
      () => assignment(c),
      (x) => x !== null && Object.keys(x.owners).length === 2 && x.phase === "active",
    );
    expect(a?.leaderEpoch).toBe(newEpoch);
    // The resumed replica wrote nothing after its pause.
    const staleWrites = old.logs
      .slice(logFrom)
      .filter(
        (l) => l.event === "version_written" || l.event === "version_active" || l.event === "member_joined",
      );
    expect(staleWrites).toEqual([]);
  });

  it("expels a member whose heartbeats stop, and removes one that leaves at once", async () => {
    const c = await cluster();
    const leader = await c.waitForLeader();
    const silent = new RawStream(leader.address);
    env.cleanup(() => silent.close());
    silent.hello("g2", "silent");
    await silent.waitFor((m) => m.kind.case === "welcome");
    const stay = await worker(c, "stay", "g2");
    const leaving = await worker(c, "leaving", "g2");
    const key = (n: string) => env.client.get(`${c.namespace}/groups/g2/members/${n}`).string();
    await until(
      () => key("silent"),
      (v) => v !== null,
    );
    // The silent member sent no heartbeat: the RM closes its idle stream, then expels it.
    const ended = await silent.ended;
    expect(ended.code).toBe(status.UNAVAILABLE);
    await until(
      () => key("silent"),
      (v) => v === null,
      10_000,
    );
    const t0 = performance.now();
    await leaving.close();
    await until(
      () => key("leaving"),
      (v) => v === null,
      2000,
    );
    expect(performance.now() - t0).toBeLessThan(2000);
    const a = await until(
      () => assignment(c, "g2"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 1,
    );
    expect(a?.owners).toEqual({ stay: [0] });
    // etcd shows the version a moment before the worker has applied it.
    await until(
      () => stay.assignment.running,
      (r) => r.length === 1,
    );
    expect(stay.assignment.running).toEqual([0]);
  });

  it("debounces a burst of joins into one version", async () => {
    const c = await cluster(["--rebalance-delay", "1000"]);
    await Promise.all(Array.from({ length: 6 }, (_, i) => worker(c, `burst-${i}`, "g3")));
    const a = await until(
      () => assignment(c, "g3"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 6,
    );
    expect(a?.version).toBe(1);
  });

  it("refuses bad input with precise statuses and leaves other members undisturbed", async () => {
    const c = await cluster(["--max-message-bytes", "4096"]);
    const leader = await c.waitForLeader();
    const good = await worker(c, "good", "g4");
    const before = await until(
      () => assignment(c, "g4"),
      (x) => x?.phase === "active",
    );
    const open = (fn: (s: RawStream) => void) => {
      const s = new RawStream(leader.address);
      env.cleanup(() => s.close());
      fn(s);
      return s.ended;
    };
    const notHello = await open((s) => s.heartbeat("x"));
    expect(notHello.code).toBe(status.INVALID_ARGUMENT);
    const badName = await open((s) => s.hello("g4", "bad name!"));
    expect(badName.code).toBe(status.INVALID_ARGUMENT);
    expect(badName.details).toContain("node_id");
    const dup = await open((s) => s.hello("g4", "good"));
    expect(dup.code).toBe(status.ALREADY_EXISTS);
    const huge = await open((s) => s.hello("g4", "huge", { labels: { blob: "x".repeat(10_000) } }));
    expect(huge.code).toBe(status.RESOURCE_EXHAUSTED);
    const garbage = await open((s) => s.sendBytes(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f])));
    expect(garbage.code).toBe(status.INVALID_ARGUMENT);
    const flood = await open((s) => {
      s.hello("g4", "flood");
      void s
        .waitFor((m) => m.kind.case === "welcome")
        .then(() => {
          for (let i = 0; i < 200; i++) s.heartbeat("flood");
        });
    });
    expect(flood.code).toBe(status.RESOURCE_EXHAUSTED);
    // The well-behaved member kept its shard and its session throughout.
    expect(good.assignment.running).toEqual([0]);
    const after = await until(
      () => assignment(c, "g4"),
      (x) => x?.phase === "active",
    );
    expect(after?.owners.good).toEqual(before?.owners.good);
  });

  it("serves FetchShardData only to the owner of an active shard", async () => {
    const c = await cluster();
    await loadShardData(
      env.client,
      keyLayout(c.namespace),
      "g5",
      Array.from({ length: 10 }, (_, i) => ({ id: String(i), payload: `item-${i}` })),
    );
    const w0 = await worker(c, "d-0", "g5");
    const w1 = await worker(c, "d-1", "g5");
    await until(
      () => assignment(c, "g5"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    await until(
      () => w0.assignment.running.length === 1 && w1.assignment.running.length === 1,
      (x) => x,
    );
    const mine: string[] = [];
    for await (const r of w0.fetchShardData(w0.assignment.shardId, { batchSize: 3 })) mine.push(r.id);
    expect(mine).toEqual(["0", "2", "4", "6", "8"]);
    const notMine = (async () => {
      for await (const _ of w0.fetchShardData(1)) {
        // unreachable
      }
    })();
    await expect(notMine).rejects.toMatchObject({ code: "not_owner" });
    const leader = await c.waitForLeader();
    await expect(
      fetchShardData(leader.address, { group: "g5", nodeId: "d-0", shardId: 0, sessionToken: "forged" }),
    ).rejects.toMatchObject({
      code: status.PERMISSION_DENIED,
    });
  });
});

describe("coordinator CLI", () => {
  it("exits 2 with one clear line on invalid or inconsistent settings", () => {
    const cases: [string[], RegExp][] = [
      [["--session-timeout", "1000", "--heartbeat-interval", "600"], /session-timeout/],
      [["--member-lease-ttl", "3", "--leader-ttl", "3"], /member-lease-ttl/],
      [["--strategy", "round-robin"], /strategy/],
      [["--listen", "nope"], /listen/],
      [["--no-such-flag"], /unknown option/],
      [["--task-write-linger", "5000"], /--task-write-linger must be an integer in 0\.\.1000/],
      [["--max-txns-in-flight", "0"], /--max-txns-in-flight must be an integer in 1\.\.64/],
    ];
    for (const [args, re] of cases) {
      const r = spawnSync(process.execPath, [coordinatorBin, ...args], { encoding: "utf8", timeout: 10_000 });
      expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
  });

  it("documents every flag in --help", () => {
    const r = spawnSync(process.execPath, [coordinatorBin, "serve", "--help"], {
      encoding: "utf8",
      timeout: 10_000,
    });
    expect(r.status).toBe(0);
    for (const flag of [
      "--etcd",
      "--listen",
      "--advertise",
      "--id",
      "--namespace",
      "--leader-ttl",
      "--heartbeat-interval",
      "--session-timeout",
      "--member-lease-ttl",
      "--rebalance-delay",
      "--strategy",
      "--shards",
      "--http-listen",
      "--task-write-linger",
      "--max-txns-in-flight",
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });
});
