import { status } from "@grpc/grpc-js";
import { AssignmentPhase, type CoordinatorMessage } from "@org/proto";
import { describe, expect, it } from "vitest";
import { getFreePorts } from "./harness/free-port.js";
import { assignmentOf, runCli, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { JobProcess } from "./support/job-process.js";
import { getShardInfo, RawStream } from "./support/raw-client.js";
import { type RmCluster, RmProcess } from "./support/rm-cluster.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// Identity, incarnations, versions and bad records, as an outside client sees them: raw
// grpc-js streams on the .proto, real replicas, real etcd. Session timeout 5 s, leader TTL 2 s.
const env = useTestEnv(3);
const sessionTimeoutMs = 5000;

const assignment = (c: RmCluster, group = "g1") => assignmentOf(env, c, group);

function raw(address: string): RawStream {
  const s = new RawStream(address);
  env.cleanup(() => s.close());
  return s;
}

/** Heartbeats every 400 ms until the test ends (a raw client must stay alive like a worker). */
function keepBeating(s: RawStream, nodeId: string): void {
  const t = setInterval(() => s.heartbeat(nodeId), 400);
  env.cleanup(() => clearInterval(t));
}

/** The view a coordinator message carries, if any. */
function viewOf(
  m: CoordinatorMessage,
): { version: number; phase: AssignmentPhase; shards: number[] } | undefined {
  const k = m.kind;
  if (k.case === "welcome" && k.value.assignment !== undefined)
    return {
      version: Number(k.value.assignment.version),
      phase: k.value.assignment.phase,
      shards: [...k.value.assignment.shards],
    };
  if (k.case === "assignment")
    return { version: Number(k.value.version), phase: k.value.phase, shards: [...k.value.shards] };
  if (k.case === "heartbeatAck")
    return { version: Number(k.value.shardVersion), phase: k.value.phase, shards: [...k.value.shards] };
  return undefined;
}

/** Records for FetchShardData, written the way operators do (`coordinator data load`). */
async function loadData(c: RmCluster, group: string, count: number): Promise<void> {
  const out = await runCli(env, c.namespace, ["data", "load", "--group", group, "--count", String(count)]);
  expect(out.code, out.stderr).toBe(0);
}

function job(c: RmCluster, node: string, group = "g1"): JobProcess {
  const j = new JobProcess({ node, group, coordinators: c.addresses, loop: true, itemMs: 50 });
  env.cleanup(() => j.stop());
  return j;
}

describe("identity and incarnations", () => {
  it("a tokenless Hello right after a failover runs nothing until the live worker's fence is over", async () => {
    const c = await startCluster(env);
    await loadData(c, "g1", 400);
    const w0 = job(c, "w0");
    const w1 = job(c, "w1");
    await until(
      () => assignment(c),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 2,
    );
    await w1.waitFor((e) => e.event === "shard_started");
    await w0.waitFor((e) => e.event === "shard_started");
    const leader = await c.waitForLeader();
    // w1 stays alive but cannot reconnect in time (paused), exactly the window an impostor
    // (or a duplicate deployment) would use right after a failover.
    w1.signal("SIGSTOP");
    const killedAt = Date.now();
    await leader.kill();
    const next = await c.waitForLeader({ not: leader });
    const s = raw(next.address);
    s.hello("g1", "w1");
    const welcome = await s.waitFor((m) => m.kind.case === "welcome");
    keepBeating(s, "w1");
    expect(welcome.kind.case === "welcome" && welcome.kind.value.resumed).toBe(false);
    expect(welcome.kind.case === "welcome" && Number(welcome.kind.value.incarnation)).toBe(2);
    // Its shard, but held: PENDING, start nothing.
    expect(viewOf(welcome)?.phase).toBe(AssignmentPhase.PENDING);
    expect(viewOf(welcome)?.shards).toEqual([1]);
    w1.signal("SIGCONT");
    // The real w1 is refused (its token is not the live incarnation's any more) and fences.
    await w1.waitFor((e) => e.event === "fenced" || e.event === "closed", 15_000);
    const active = await s.waitFor((m) => viewOf(m)?.phase === AssignmentPhase.ACTIVE, 20_000);
    const activeAt = Date.now();
    expect(viewOf(active)?.shards).toEqual([1]);
    // Not before the old incarnation's fence could have run out: its last ack came before the kill.
    expect(activeAt - killedAt).toBeGreaterThanOrEqual(sessionTimeoutMs);
    // And the old process really had stopped by then: its last processed item came earlier.
    const lastProcessed = w1.events.filter((e) => e.event === "processed").at(-1)?.t ?? 0;
    expect(lastProcessed).toBeLessThan(activeAt);
    // No new version: the same shard, a new incarnation.
    const a = await assignment(c);
    expect(a?.owners.w1).toEqual([1]);
  }, 60_000);

  it("twin Hellos for one new node id: exactly one is welcomed", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const [a, b] = [raw(leader.address), raw(leader.address)];
    a.hello("twins", "t");
    b.hello("twins", "t");
    const outcome = await Promise.all(
      [a, b].map((s) =>
        Promise.race([
          s.waitFor((m) => m.kind.case === "welcome").then(() => "welcome" as const),
          s.ended.then((e) => e.code),
        ]),
      ),
    );
    expect(outcome.filter((o) => o === "welcome")).toHaveLength(1);
    expect(outcome.filter((o) => o === status.ALREADY_EXISTS)).toHaveLength(1);
  });

  it("a planned restart keeps the membership: the next process gets the same shards, no new version", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const other = await startWorker(env, c, "r-0", "rs");
    const s = raw(leader.address);
    s.hello("rs", "r-1");
    await s.waitFor((m) => m.kind.case === "welcome");
    keepBeating(s, "r-1");
    const before = await until(
      () => assignment(c, "rs"),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 2,
    );
    const mine = before?.owners["r-1"];
    s.send({ kind: { case: "leave", value: { reason: "deploy", restart: true } } });
    expect((await s.ended).code).toBe(status.OK);
    // A new process, no token: admitted at once (the old one said it stopped), same shards.
    const next = raw(leader.address);
    next.hello("rs", "r-1");
    const welcome = await next.waitFor((m) => m.kind.case === "welcome");
    keepBeating(next, "r-1");
    expect(viewOf(welcome)).toEqual({
      version: before?.version,
      phase: AssignmentPhase.ACTIVE,
      shards: mine,
    });
    await new Promise((r) => setTimeout(r, 1500)); // longer than the rebalance delay
    expect((await assignment(c, "rs"))?.version).toBe(before?.version);
    expect(other.assignment.version).toBe(before?.version);
  });

  it("a member gone for a restart longer than the grace is expelled and its shards move", async () => {
    const c = await startCluster(env, ["--restart-grace", "1500"]);
    const leader = await c.waitForLeader();
    const other = await startWorker(env, c, "g-0", "grace");
    const s = raw(leader.address);
    s.hello("grace", "g-1");
    await s.waitFor((m) => m.kind.case === "welcome");
    keepBeating(s, "g-1");
    await until(
      () => assignment(c, "grace"),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 2,
    );
    s.send({ kind: { case: "leave", value: { reason: "deploy", restart: true } } });
    const after = await until(
      () => assignment(c, "grace"),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 1,
      10_000,
    );
    expect(Object.keys(after?.owners ?? {})).toEqual(["g-0"]);
    await until(
      () => other.assignment.running.length,
      (n) => n === 1,
    );
  });

  it("a stream that never says Hello is closed after --hello-timeout", async () => {
    const c = await startCluster(env, ["--hello-timeout", "500"]);
    const leader = await c.waitForLeader();
    // The stream opens (headers) and then says nothing.
    const ended = await raw(leader.address).ended;
    expect(ended.code).toBe(status.DEADLINE_EXCEEDED);
    expect(ended.details).toContain("no hello");
  });
});

describe("versions never go back", () => {
  it("the assignment key deleted and the leader killed: the next version is higher and handed off", async () => {
    const c = await startCluster(env);
    const w = [await startWorker(env, c, "v-0", "vg"), await startWorker(env, c, "v-1", "vg")];
    await startWorker(env, c, "v-2", "vg");
    const before = await until(
      () => assignment(c, "vg"),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 3,
    );
    await env.client.delete().key(`${c.namespace}/groups/vg/assignment`);
    const leader = await c.waitForLeader();
    await leader.kill();
    await c.waitForLeader({ not: leader });
    const after = await until(
      () => assignment(c, "vg"),
      (a) => a !== null && a.phase === "active",
      20_000,
    );
    expect(after?.version).toBeGreaterThan(before?.version ?? 0);
    // Every worker follows the higher version.
    for (const x of w)
      await until(
        () => x.assignment.version,
        (v) => v === after?.version,
      );
  }, 60_000);
});

describe("a pending version's fences survive a failover", () => {
  it("a loser expelled while alive is outwaited by the next leader too, not just by the one that expelled it", async () => {
    const c = await startCluster(env, ["--strategy", "sticky", "--shards", "4"]);
    const leader = await c.waitForLeader();
    // x will never release: it is alive (heartbeats) but ignores the handoff.
    const x = raw(leader.address);
    x.hello("fence", "x");
    await x.waitFor((m) => m.kind.case === "welcome");
    keepBeating(x, "x");
    await until(
      () => assignment(c, "fence"),
      (a) => a?.phase === "active" && (a.owners.x ?? []).length === 4,
    );
    // y joins: x must give up two shards and does not; it is expelled after the session
    // timeout, and its self-fence may run for up to another session timeout.
    await startWorker(env, c, "y", "fence");
    const key = `${c.namespace}/groups/fence/members/x`;
    await until(
      () => env.client.get(key).string(),
      (v) => v === null,
      20_000,
    );
    // The record now says the version must outwait x's fence (written right after the removal).
    const pending = await until(
      () => assignment(c, "fence"),
      (a) => a?.fencesUntil !== undefined,
      5000,
    );
    expect(pending?.phase).toBe("pending");
    const killedAt = Date.now();
    await leader.kill();
    await c.waitForLeader({ not: leader });
    await until(
      () => assignment(c, "fence"),
      (a) => a?.phase === "active",
      30_000,
    );
    // The next leader waited a full session timeout from its takeover (after the kill).
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(sessionTimeoutMs);
  }, 90_000);
});

describe("bad records stay in their group", () => {
  it("garbage in one group's assignment: the other group is served across a failover; repair recovers", async () => {
    const c = await startCluster(env);
    const good = await startWorker(env, c, "a-0", "healthy");
    await startWorker(env, c, "b-0", "broken");
    const healthy = await until(
      () => assignment(c, "healthy"),
      (a) => a?.phase === "active",
    );
    await until(
      () => assignment(c, "broken"),
      (a) => a?.phase === "active",
    );
    await env.client.put(`${c.namespace}/groups/broken/assignment`).value('{"version": 7, "phase": "act');
    const leader = await c.waitForLeader();
    await leader.kill();
    const next = await c.waitForLeader({ not: leader });
    // The healthy group: same version, its worker reattached and still running.
    await until(
      () => good.coordinator,
      (addr) => addr === next.address,
    );
    expect((await assignment(c, "healthy"))?.version).toBe(healthy?.version);
    expect(good.assignment.running).toEqual([0]);
    const st = (await (await fetch(`${next.httpUrl}/status`)).json()) as {
      groups: { group: string; degraded: Record<string, string> }[];
    };
    expect(st.groups.find((g) => g.group === "broken")?.degraded.assignment_invalid).toContain(
      "broken/assignment",
    );
    expect(st.groups.find((g) => g.group === "healthy")?.degraded).toEqual({});
    // The operator repairs: a version above the one the bad record still shows.
    const out = await runCli(env, c.namespace, ["repair", "--group", "broken"]);
    expect(out.code, out.stderr).toBe(0);
    const repaired = await until(
      () => assignment(c, "broken"),
      (a) => a?.phase === "active",
    );
    expect(repaired?.version).toBeGreaterThan(7);
  }, 90_000);

  it("an invalid group config keeps the last good one (no strategy flip, no reshuffle)", async () => {
    const c = await startCluster(env);
    await env.client
      .put(`${c.namespace}/groups/cfg/config`)
      .value(JSON.stringify({ strategy: "sticky", shards: 8 }));
    await startWorker(env, c, "c-0", "cfg");
    const a = await until(
      () => assignment(c, "cfg"),
      (x) => x?.phase === "active",
    );
    expect(a?.strategy).toBe("sticky");
    await env.client.put(`${c.namespace}/groups/cfg/config`).value('{"strategy": "modulo", "shards": -1}');
    const leader = await c.waitForLeader();
    await leader.kill();
    await c.waitForLeader({ not: leader });
    await startWorker(env, c, "c-1", "cfg");
    const b = await until(
      () => assignment(c, "cfg"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    expect(b?.strategy).toBe("sticky");
    expect(b?.totalShards).toBe(8);
  }, 60_000);

  it("a member record that fails validation keeps its owner's shards until its worker says otherwise", async () => {
    const c = await startCluster(env);
    const w = [await startWorker(env, c, "m-0", "mem"), await startWorker(env, c, "m-1", "mem")];
    const before = await until(
      () => assignment(c, "mem"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    const key = `${c.namespace}/groups/mem/members/m-1`;
    const lease = (await env.client.get(key).exec()).kvs[0]?.lease ?? "0";
    await env.client.put(key).value("not json").lease(lease);
    const leader = await c.waitForLeader();
    await leader.kill();
    await c.waitForLeader({ not: leader });
    // m-1 comes back as a new incarnation (its record is unreadable: no token can match), the
    // record is written anew, and no version moves its shard away without a handoff.
    const rec = await until(
      async () => {
        try {
          return JSON.parse((await env.client.get(key).string()) ?? "") as {
            incarnation?: number;
            state?: string;
          };
        } catch {
          return undefined;
        }
      },
      (r) => r?.state === "active",
      20_000,
    );
    expect(rec?.incarnation).toBe(1);
    await until(
      () => w[1]?.assignment.running.length ?? 0,
      (n) => n === 1,
      20_000,
    );
    const after = await assignment(c, "mem");
    expect(after?.version).toBe(before?.version);
    expect(after?.owners["m-1"]).toEqual(before?.owners["m-1"]);
  }, 60_000);
});

describe("cluster settings", () => {
  it("a replica whose flags differ adopts the cluster's settings and says so", async () => {
    const c = await startCluster(env);
    await c.waitForLeader();
    // The cluster's settings were written by its first leader (session timeout 5 s). Stop
    // every replica and start one with a shorter session timeout: it must not apply it.
    for (const r of c.replicas) await r.stop();
    const [port, httpPort] = await getFreePorts(2);
    const odd = new RmProcess({
      id: "rm-odd",
      etcd: env.etcd.endpoints,
      namespace: c.namespace,
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: [...fastFlags, "--session-timeout", "4000"],
    });
    odd.start();
    env.cleanup(() => odd.kill());
    const adopted = await odd.waitForLog((l) => l.event === "cluster_settings_adopted", 20_000);
    expect(JSON.stringify(adopted.differences)).toContain("sessionTimeoutMs: 4000 -> 5000");
    const s = raw(odd.address);
    s.hello("settings", "x");
    const welcome = await s.waitFor((m) => m.kind.case === "welcome", 30_000);
    expect(welcome.kind.case === "welcome" && welcome.kind.value.sessionTimeoutMs).toBe(sessionTimeoutMs);
  }, 60_000);
});

describe("limits", () => {
  it("a replica holds at most --max-streams worker streams; unary calls are rate limited per node", async () => {
    const c = await startCluster(env, ["--max-streams", "2", "--unary-rate-per-node", "1"]);
    const leader = await c.waitForLeader();
    const [a, b] = [raw(leader.address), raw(leader.address)];
    a.hello("lim", "a");
    b.hello("lim", "b");
    await a.waitFor((m) => m.kind.case === "welcome");
    await b.waitFor((m) => m.kind.case === "welcome");
    const third = await raw(leader.address).ended;
    expect(third.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(third.details).toContain("maximum of 2");
    // Burst of twice the rate (2), then refused.
    const codes: number[] = [];
    for (let i = 0; i < 4; i++)
      codes.push(
        await getShardInfo(leader.address, "lim", "a").then(
          () => status.OK,
          (e: { code: number }) => e.code,
        ),
      );
    expect(codes.slice(0, 2)).toEqual([status.OK, status.OK]);
    expect(codes.slice(2)).toContain(status.RESOURCE_EXHAUSTED);
  });

  it("after a failover each member record names the replica that serves it now", async () => {
    const c = await startCluster(env);
    await startWorker(env, c, "via-1", "via");
    await startWorker(env, c, "via-2", "via");
    const leader = await c.waitForLeader();
    await leader.kill();
    const next = await c.waitForLeader({ not: leader });
    for (const n of ["via-1", "via-2"])
      await until(
        async () =>
          JSON.parse((await env.client.get(`${c.namespace}/groups/via/members/${n}`).string()) ?? "{}") as {
            replica?: string;
          },
        (r) => r.replica === next.id,
        20_000,
      );
  }, 60_000);
});
