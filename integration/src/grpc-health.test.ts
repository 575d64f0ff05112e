import { describe, expect, it } from "vitest";
import { getFreePorts } from "./harness/free-port.js";
import { startCluster, until } from "./support/cluster-helpers.js";
import { RawHealthClient } from "./support/health-client.js";
import { RmProcess } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// gRPC health and reflection on real replica processes, asked by a bare grpc-js client (what
// a load balancer, grpc_health_probe or grpcurl sends).
const env = useTestEnv(1);

const shardService = "shard.v1.ShardService";
const taskService = "shard.v1.TaskService";

function client(address: string): RawHealthClient {
  const c = new RawHealthClient(address);
  env.cleanup(() => c.close());
  return c;
}

describe("gRPC health and reflection", () => {
  it("the leader serves the services, followers are alive but NOT_SERVING them; Watch follows a failover", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const followers = c.replicas.filter((r) => r !== leader);
    expect(await client(leader.address).check("")).toBe("SERVING");
    expect(await client(leader.address).check(shardService)).toBe("SERVING");
    expect(await client(leader.address).check(taskService)).toBe("SERVING");
    const watches = new Map<string, { readonly seen: string[]; cancel(): void }>();
    for (const f of followers) {
      const h = client(f.address);
      await f.waitForLog((l) => l.event === "grpc_listening");
      // Followers' etcd health comes up with their first answer; wait for it, then assert.
      await until(
        () => h.check(""),
        (s) => s === "SERVING",
      );
      expect(await h.check(shardService)).toBe("NOT_SERVING");
      expect(await h.check(taskService)).toBe("NOT_SERVING");
      const w = h.watch(shardService);
      watches.set(f.id, w);
      await until(
        () => [...w.seen],
        (s) => s.length >= 1,
      );
      expect(w.seen).toEqual(["NOT_SERVING"]);
    }
    // An unknown service is NOT_FOUND on Check (the protocol's answer, not a guess).
    await expect(client(leader.address).check("no.such.Service")).rejects.toMatchObject({ code: 5 });

    await leader.kill();
    const next = await c.waitForLeader({ not: leader, timeoutMs: 30_000 });
    const nextWatch = watches.get(next.id);
    expect(nextWatch).toBeDefined();
    // The new leader's Watch saw NOT_SERVING turn SERVING, without a new call.
    await until(
      () => [...(nextWatch?.seen ?? [])],
      (s) => s.at(-1) === "SERVING",
      10_000,
    );
    expect(nextWatch?.seen).toEqual(["NOT_SERVING", "SERVING"]);
    expect(await client(next.address).check(shardService)).toBe("SERVING");
    // The other follower still reports itself alive and not the leader.
    const other = followers.find((f) => f !== next);
    expect(other).toBeDefined();
    if (other !== undefined) {
      expect(await client(other.address).check(shardService)).toBe("NOT_SERVING");
      expect(await client(other.address).check("")).toBe("SERVING");
      expect(watches.get(other.id)?.seen).toEqual(["NOT_SERVING"]);
    }
    for (const w of watches.values()) w.cancel();
  });

  it("a replica's Watch hears NOT_SERVING when it stops", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = client(leader.address).watch("");
    await until(
      () => [...w.seen],
      (s) => s.length >= 1,
    );
    expect(w.seen).toEqual(["SERVING"]);
    expect(await leader.stop()).toBe(0);
    expect(w.seen).toEqual(["SERVING", "NOT_SERVING"]);
  });

  it("a replica that cannot reach etcd is NOT_SERVING overall, and the services too", async () => {
    const [grpcPort, httpPort, deadEtcd] = await getFreePorts(3);
    const r = new RmProcess({
      id: "rm-cut",
      etcd: [`http://127.0.0.1:${deadEtcd}`],
      namespace: "/health-cut",
      port: grpcPort ?? 0,
      httpPort: httpPort ?? 0,
    });
    r.start();
    env.cleanup(() => r.kill());
    await r.waitForLog((l) => l.event === "grpc_listening");
    const h = client(r.address);
    expect(await h.check("")).toBe("NOT_SERVING");
    expect(await h.check(shardService)).toBe("NOT_SERVING");
  });

  it("server reflection lists the services and describes them from the generated descriptors", async () => {
    const c = await startCluster(env);
    const r = c.replicas[1];
    expect(r).toBeDefined();
    if (r === undefined) return;
    const h = client(r.address);
    // startCluster waits for the leader only: this follower may still be binding its port.
    await r.waitForLog((l) => l.event === "grpc_listening");
    // @grpc/reflection lists the services of the descriptors it was given, not itself.
    expect((await h.listServices()).sort()).toEqual(
      ["grpc.health.v1.Health", shardService, taskService].sort(),
    );
    const files = await h.fileContainingSymbol(taskService);
    const names = files.map((f) => f.name).sort();
    expect(names).toEqual(["shard/v1/shard.proto", "shard/v1/task.proto"]);
    const task = files.find((f) => f.name === "shard/v1/task.proto");
    expect(task?.service.map((s) => s.name)).toEqual(["TaskService"]);
    expect(task?.service[0]?.method.map((m) => m.name)).toContain("SubmitTasks");
    const shard = await h.fileContainingSymbol("shard.v1.WorkerMessage");
    expect(shard.map((f) => f.name)).toEqual(["shard/v1/shard.proto"]);
  });
});
