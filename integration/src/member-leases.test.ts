import { keyLayout, rawLeaseClient } from "@org/coordinator";
import { describe, expect, it } from "vitest";
import { startCluster, until } from "./support/cluster-helpers.js";
import { RawStream } from "./support/raw-client.js";
import { useTestEnv } from "./support/test-env.js";

// First-time members that join together share one etcd lease (one LeaseGrant per batch,
// not per member). What must still hold: a member that goes takes only its own key, and
// with every replica gone the members expire by themselves (member lease TTL 8 s here).
const env = useTestEnv(1);

describe("shared member leases", () => {
  it("a batch shares a lease; one member's expulsion leaves the others; with every replica gone all expire", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const keys = keyLayout(c.namespace);
    const n = 20;
    const streams = Array.from({ length: n }, () => new RawStream(leader.address));
    env.cleanup(() => {
      for (const s of streams) s.close();
    });
    for (const [i, s] of streams.entries()) s.hello("ls", `n${i}`);
    await Promise.all(streams.map((s) => s.waitFor((m) => m.kind.case === "welcome")));
    // Every member but n0 keeps beating; n0 goes silent and is expelled after its session.
    const beat = setInterval(() => {
      for (const [i, s] of streams.entries()) if (i > 0) s.heartbeat(`n${i}`);
    }, 400);
    env.cleanup(() => clearInterval(beat));
    const members = async () => {
      const r = await env.client.getAll().prefix(keys.membersPrefix("ls")).exec();
      return new Map(r.kvs.map((kv) => [kv.key.toString().slice(keys.membersPrefix("ls").length), kv.lease]));
    };
    const before = await members();
    expect(before.size).toBe(n);
    const leases = new Set(before.values());
    expect(leases.size).toBeLessThan(n);
    const shared = before.get("n0");
    expect([...before.values()].filter((l) => l === shared).length).toBeGreaterThan(1);

    const afterExpel = await until(
      () => members(),
      (m) => !m.has("n0"),
      15_000,
    );
    expect(afterExpel.size).toBe(n - 1);
    // The lease n0 shared is still alive for the others.
    const ttl = await rawLeaseClient(env.client).leaseTimeToLive({ ID: shared ?? "0" });
    expect(Number(ttl.TTL)).toBeGreaterThan(0);

    clearInterval(beat);
    await c.stop();
    const gone = await until(
      () => members(),
      (m) => m.size === 0,
      20_000,
    );
    expect(gone.size).toBe(0);
  }, 60_000);
});
