import { randomBytes } from "node:crypto";
import { classifyEtcdError, createEtcdClient } from "@org/coordinator";
import { describe, expect, it } from "vitest";
import { getFreePorts, startTcpProxy } from "./harness/index.js";
import { useTestEnv } from "./support/test-env.js";

// The coordinator's etcd client against real etcd: answers larger than grpc-js's 4 MiB
// default, a dead endpoint among live ones, and a write whose answer is lost (which must
// not be replayed: etcd3's default policy replayed it).
const env = useTestEnv(3);

function client(endpoints: readonly string[]) {
  const c = createEtcdClient(endpoints);
  env.cleanup(() => c.close());
  return c;
}

describe("the coordinator's etcd client", () => {
  it("reads one range of values larger than 4 MiB in all", async () => {
    const prefix = `/big-${randomBytes(4).toString("hex")}/`;
    const value = "v".repeat(1024 * 1024); // 1 MiB, under etcd's 1.5 MiB request limit
    for (let i = 0; i < 6; i++) await env.client.put(`${prefix}${i}`).value(value);
    const kvs = await client(env.etcd.endpoints).getAll().prefix(prefix).strings();
    expect(Object.keys(kvs)).toHaveLength(6);
    expect(Object.values(kvs).every((v) => v.length === value.length)).toBe(true);
  });

  it("a dead endpoint among live ones fails no call: writes that never left are retried elsewhere", async () => {
    const [dead] = await getFreePorts(1);
    const c = client([`http://127.0.0.1:${dead}`, ...env.etcd.endpoints]);
    const prefix = `/dead-${randomBytes(4).toString("hex")}/`;
    for (let i = 0; i < 30; i++) {
      await c.put(`${prefix}${i}`).value(String(i));
      await c
        .if(`${prefix}${i}`, "Value", "==", String(i))
        .then(c.put(`${prefix}t${i}`).value("ok"))
        .commit();
      expect(await c.get(`${prefix}t${i}`).string()).toBe("ok");
    }
  });

  it("a write whose answer is lost fails with its deadline and is not replayed", async () => {
    const target = new URL(env.etcd.endpoints[0] ?? "");
    const proxy = await startTcpProxy({ target: { host: target.hostname, port: Number(target.port) } });
    env.cleanup(() => proxy.close());
    const key = `/lost-${randomBytes(4).toString("hex")}`;
    const marker = `marker-${randomBytes(8).toString("hex")}`;
    const c = client([proxy.url]);
    await c.get("warm-up").string(); // connected before the fault
    const fired = proxy.holdReplyTo(marker, 3000);
    const err = await c
      .put(key)
      .value(marker)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await fired;
    expect(classifyEtcdError(err)).toBe("unavailable");
    expect(String(err)).toContain("DEADLINE_EXCEEDED");
    // It committed once, and only once: a replay would have made version 2.
    const res = await env.client.get(key).exec();
    expect(res.kvs[0]?.value.toString()).toBe(marker);
    expect(res.kvs[0]?.version).toBe("1");
  });
});
