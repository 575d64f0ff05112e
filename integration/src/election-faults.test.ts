import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { getFreePorts, startTcpProxy, type TcpProxy } from "./harness/index.js";
import { coordinatorArgs } from "./support/coordinator-state.js";
import { RmProcess } from "./support/rm-cluster.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// The election against etcd faults that used to wedge it or leave followers naming a dead
// leader: a campaign transaction that committed but whose answer was lost, a leader watch
// whose resume revision was compacted, and etcd members killed and restarted. Real etcd
// (3 members), real replica processes, a loopback TCP proxy for the lost answer.
const env = useTestEnv(3);

interface Status {
  role: string;
  leaderEpoch: number;
  leader: { id: string; address: string; epoch: number } | null;
  leaderWatch: string;
}

async function replica(id: string, namespace: string, etcd: readonly string[], args = fastFlags) {
  const [port, httpPort] = await getFreePorts(2);
  const r = new RmProcess({ id, etcd, namespace, port: port ?? 0, httpPort: httpPort ?? 0, args });
  r.start();
  env.cleanup(() => r.kill());
  return r;
}

async function status(r: RmProcess): Promise<Status> {
  return (await r.status()) as unknown as Status;
}

async function until<T>(fn: () => Promise<T>, pred: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (pred(v)) return v;
      last = v;
    } catch (e) {
      last = String(e);
    }
    if (performance.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The leader as etcd has it: the oldest election key's value and create revision. */
async function etcdLeader(namespace: string): Promise<{ id: string; epoch: number } | undefined> {
  const res = await env.client
    .getAll()
    .prefix(`${namespace}/election/leader/`)
    .sort("Create", "Ascend")
    .limit(1)
    .exec();
  const kv = res.kvs[0];
  if (kv === undefined) return undefined;
  return { id: (JSON.parse(kv.value.toString()) as { id: string }).id, epoch: Number(kv.create_revision) };
}

function proxyTo(url: string): Promise<TcpProxy> {
  const u = new URL(url);
  return startTcpProxy({ target: { host: u.hostname, port: Number(u.port) } });
}

const ns = () => `/election-${randomBytes(4).toString("hex")}`;

describe("election under etcd faults", () => {
  it("a campaign whose transaction committed but whose answer was lost still leads, on the key it created", async () => {
    const namespace = ns();
    const proxy = await proxyTo(env.etcd.endpoints[0] ?? "");
    env.cleanup(() => proxy.close());
    // A leader TTL well above the 2.5 s hold below, so the lease's fence survives it.
    const args = coordinatorArgs({
      leaderTtlSec: 8,
      heartbeatIntervalMs: 500,
      sessionTimeoutMs: 10_000,
      memberLeaseTtlSec: 15,
      rebalanceDelayMs: 300,
    });
    // The campaign transaction carries the candidate's value; hold etcd's answer to the
    // first request that carries it for longer than the 2 s call deadline.
    const id = "rm-lost-answer";
    const [port, httpPort] = await getFreePorts(2);
    const fired = proxy.holdReplyTo(`"id":"${id}","address":"127.0.0.1:${port}"`, 2500);
    const r = new RmProcess({
      id,
      etcd: [proxy.url],
      namespace,
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args,
    });
    r.start();
    env.cleanup(() => r.kill());
    await fired;
    // etcd is not idle meanwhile: any write moves its revision past our key's, so the
    // header revision of a retried transaction is no longer our epoch.
    await env.client.put(`${namespace}/unrelated`).value("x");

    const st = await until(
      () => status(r),
      (x) => x.role === "leader",
      30_000,
    );
    // The key the lost attempt created is the one it leads on: one candidate key, and the
    // leader's epoch is that key's create revision.
    const keys = await env.client.getAll().prefix(`${namespace}/election/leader/`).exec();
    expect(keys.kvs).toHaveLength(1);
    expect(st.leaderEpoch).toBe(Number(keys.kvs[0]?.create_revision));
    expect(
      r.logs.some((l) => l.event === "campaign_key_recovered" && l.campaignEpoch === st.leaderEpoch),
    ).toBe(true);
  });

  it("a follower's leader view recovers when the revision its watch would resume from was compacted", async () => {
    const namespace = ns();
    const direct = env.etcd.endpoints;
    const first = await replica("rm-a", namespace, direct);
    await until(
      () => status(first),
      (x) => x.role === "leader",
    );
    // The follower reaches etcd through a proxy that the test can cut.
    const proxy = await proxyTo(direct[0] ?? "");
    env.cleanup(() => proxy.close());
    const follower = await replica("rm-f", namespace, [proxy.url]);
    await until(
      () => status(follower),
      (x) => x.leader?.id === "rm-a" && x.leaderWatch === "live",
    );

    // Cut the follower off; meanwhile the leader dies, another replica leads, a third
    // joins, and etcd compacts past every revision the follower saw.
    proxy.sever();
    await first.kill();
    const second = await replica("rm-b", namespace, direct);
    await until(
      () => status(second),
      (x) => x.role === "leader",
    );
    const third = await replica("rm-c", namespace, direct);
    await third.waitForLog((l) => l.event === "leader_observed" && l.leader === "rm-b");
    const rev = (await env.client.get("any").exec()).header.revision;
    const compact = spawnSync("etcdctl", ["--endpoints", direct.join(","), "compact", rev], {
      encoding: "utf8",
      timeout: 10_000,
    });
    expect(compact.status, compact.stderr).toBe(0);
    proxy.restore();

    // etcd3 alone re-creates the watch at the compacted revision and etcd cancels it; the
    // follower must re-read (and name rm-b) and watch again from there.
    const seen = await until(
      () => status(follower),
      (x) => x.leader?.id === "rm-b" && x.leaderWatch === "live",
      20_000,
    );
    expect(seen.leader?.epoch).toBe((await etcdLeader(namespace))?.epoch);
    expect(seen.role).toBe("follower");
    // Its watch works again: the next change is seen. rm-c's candidate key is older than
    // the follower's (whose lease lapsed while it was cut off), so rm-c leads next.
    await second.stop();
    const next = await until(
      () => status(follower),
      (x) => x.leader?.id === "rm-c",
      20_000,
    );
    expect(next.role).toBe("follower");
    expect(next.leader?.epoch).toBe((await etcdLeader(namespace))?.epoch);
  });

  it("every replica names the real leader after etcd members are killed and restarted", async () => {
    const namespace = ns();
    const rs = [
      await replica("rm-1", namespace, env.etcd.endpoints),
      await replica("rm-2", namespace, env.etcd.endpoints),
      await replica("rm-3", namespace, env.etcd.endpoints),
    ];
    const agree = async () => {
      const truth = await etcdLeader(namespace);
      const views = await Promise.all(rs.map((r) => status(r)));
      return { truth, views };
    };
    const converged = (x: Awaited<ReturnType<typeof agree>>) =>
      x.truth !== undefined &&
      x.views.filter((v) => v.role === "leader").length === 1 &&
      x.views.every((v) => v.leader?.id === x.truth?.id && v.leader?.epoch === x.truth?.epoch);
    await until(agree, converged, 20_000);

    const [m0, m1, m2] = env.etcd.members;
    if (m0 === undefined || m1 === undefined || m2 === undefined) throw new Error("3 members expected");
    // One member at a time: quorum holds, streams on the killed member move elsewhere.
    for (const m of [m0, m1, m2]) {
      await m.kill();
      await new Promise((res) => setTimeout(res, 1500));
      await m.restart();
      await until(agree, converged, 20_000);
    }
    // Quorum lost for longer than the leader TTL: the leader steps down; once etcd is back,
    // a leader is elected and every replica names it.
    await m1.kill();
    await m2.kill();
    await new Promise((res) => setTimeout(res, 4000));
    await Promise.all([m1.restart(), m2.restart()]);
    // The replicas' leader watches were cancelled by etcd while it had no leader (they
    // require one): a replica may name the leader from a read before its watch is back, so
    // wait for both (until() fails the test if they do not come within 30 s).
    await until(agree, (x) => converged(x) && x.views.every((v) => v.leaderWatch === "live"), 30_000);
  });
});
