import { randomBytes } from "node:crypto";
import { createEtcdClient, revokeEverywhere } from "@org/coordinator";
import { describe, expect, it } from "vitest";
import { findEtcdLeader } from "./harness/index.js";
import { useTestEnv } from "./support/test-env.js";

// The coordinator's etcd client when one member is gone or cut off, against a real 3-member
// etcd (the harness runs it with a 500 ms election timeout). These are the two calls the
// next leader waits on after a leader self-fences (docs/drills.md, net-etcd-leader-cut): the
// old leader's revoke, and the next candidate's watch of its predecessor's key.
const env = useTestEnv(3);

describe("the coordinator's etcd client with a member lost", () => {
  it("revokeEverywhere does not wait for a follower that answers nothing", async () => {
    // A follower: with the raft leader frozen nothing can commit until the others elect
    // one (a revoke forwarded to it meanwhile waits out its deadline wherever it was sent).
    const raftLeader = await findEtcdLeader(env.etcd.members);
    const paused = env.etcd.members.find((m) => m !== raftLeader);
    if (paused === undefined) throw new Error("no follower");
    const leases = [];
    for (let i = 0; i < 8; i++) leases.push(await env.client.lease(30, { autoKeepAlive: false }).grant());
    const prefix = `/revoke-${randomBytes(4).toString("hex")}/`;
    for (const [i, id] of leases.entries()) await env.client.put(`${prefix}${i}`).value("x").lease(id);
    const c = createEtcdClient(env.etcd.endpoints);
    env.cleanup(() => c.close());
    await c.get("warm-up").string(); // connections up before the fault
    paused.pause();
    env.cleanup(() => paused.resume());
    const took: number[] = [];
    for (const id of leases) {
      const t0 = performance.now();
      await revokeEverywhere(c, id);
      took.push(performance.now() - t0);
    }
    paused.resume();
    // One call to a random endpoint lands on the paused member 1 time in 3 and fails at its
    // 2 s deadline; sent everywhere, a live member answers each revoke.
    expect(Math.max(...took)).toBeLessThan(1500);
    expect(await env.client.getAll().prefix(prefix).keys()).toEqual([]);
    // A lease already gone counts as revoked.
    await expect(revokeEverywhere(c, leases[0] ?? "")).resolves.toBeUndefined();
    console.log(`revokeEverywhere with a member paused: ${took.map((t) => Math.round(t)).join(", ")} ms`);
  });

  it("a watch on a member that lost its leader is cancelled, not left silent", async () => {
    const [lone, ...others] = env.etcd.members;
    if (lone === undefined) throw new Error("no member");
    const c = createEtcdClient([lone.clientUrl]);
    env.cleanup(() => c.close());
    const watcher = await c
      .watch()
      .key(`/silent-${randomBytes(4).toString("hex")}`)
      .create();
    env.cleanup(() => watcher.cancel().catch(() => undefined));
    const disconnected = new Promise<number>((resolve) =>
      watcher.once("disconnected", () => resolve(performance.now())),
    );
    const t0 = performance.now();
    for (const m of others) await m.kill();
    env.cleanup(async () => {
      for (const m of others) await m.restart();
    });
    // etcd cancels a require-leader stream after 3 election timeouts without a leader
    // (1.5 s here, plus the lone member noticing it lost its leader); without the metadata
    // the stream stays open and silent for as long as the member runs.
    let timer: NodeJS.Timeout | undefined;
    const at = await Promise.race([
      disconnected,
      new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), 8000);
      }),
    ]);
    clearTimeout(timer);
    expect(at).toBeDefined();
    console.log(`watch on a member without a leader cancelled after ${Math.round((at ?? 0) - t0)} ms`);
  });
});
