import { Etcd3 } from "etcd3";
import { afterEach, describe, expect, it } from "vitest";
import {
  EtcdUnsupportedError,
  HarnessConfigError,
  isDockerReachable,
  resolveEtcdProvider,
  startEtcdCluster,
} from "./index.js";

const dockerReachable = await isDockerReachable();

describe("resolveEtcdProvider", () => {
  it("defaults to the binary provider", () => {
    expect(resolveEtcdProvider(undefined, {})).toBe("binary");
    expect(resolveEtcdProvider(undefined, { ETCD_PROVIDER: "" })).toBe("binary");
  });

  it("follows ETCD_PROVIDER when the caller does not choose", () => {
    expect(resolveEtcdProvider(undefined, { ETCD_PROVIDER: "testcontainers" })).toBe("testcontainers");
    expect(resolveEtcdProvider(undefined, { ETCD_PROVIDER: "binary" })).toBe("binary");
  });

  it("lets an explicit choice win over ETCD_PROVIDER", () => {
    expect(resolveEtcdProvider("binary", { ETCD_PROVIDER: "testcontainers" })).toBe("binary");
    expect(resolveEtcdProvider("testcontainers", { ETCD_PROVIDER: "binary" })).toBe("testcontainers");
  });

  it("rejects an unknown ETCD_PROVIDER instead of silently falling back", () => {
    expect(() => resolveEtcdProvider(undefined, { ETCD_PROVIDER: "docker" })).toThrow(HarnessConfigError);
  });
});

describe("startEtcdCluster provider selection", () => {
  const saved = process.env.ETCD_PROVIDER;

  afterEach(() => {
    if (saved === undefined) delete process.env.ETCD_PROVIDER;
    else process.env.ETCD_PROVIDER = saved;
  });

  // A 3-member request is refused by the testcontainers provider before it touches
  // Docker, which makes the routing observable on machines without Docker.
  it("routes to testcontainers when ETCD_PROVIDER=testcontainers", async () => {
    process.env.ETCD_PROVIDER = "testcontainers";
    await expect(startEtcdCluster({ size: 3 })).rejects.toThrow(EtcdUnsupportedError);
  });

  it("routes to testcontainers when options.provider says so, whatever the environment", async () => {
    process.env.ETCD_PROVIDER = "binary";
    await expect(startEtcdCluster({ size: 3, provider: "testcontainers" })).rejects.toThrow(
      /testcontainers provider runs 1-member clusters only/,
    );
  });

  it("routes to the binary provider when options.provider says so, whatever the environment", async () => {
    process.env.ETCD_PROVIDER = "testcontainers";
    await using etcd = await startEtcdCluster({ provider: "binary", name: "explicit-binary" });
    expect(etcd.provider).toBe("binary");
    expect(etcd.members[0]?.pid).toBeTypeOf("number");
  });

  it("rejects a cluster name that would not be a safe etcd name or file name", async () => {
    await expect(startEtcdCluster({ name: "../escape" })).rejects.toThrow(HarnessConfigError);
  });
});

describe.runIf(dockerReachable)("startEtcdCluster with the testcontainers provider", () => {
  it("runs a 1-member etcd container that serves put/get and survives a restart", async () => {
    await using etcd = await startEtcdCluster({ provider: "testcontainers", name: "container" });
    expect(etcd.provider).toBe("testcontainers");
    expect(etcd.endpoints).toHaveLength(1);
    const only = etcd.members[0];
    if (only === undefined) throw new Error("no member");
    expect(only.running).toBe(true);
    expect(only.pid).toBeUndefined();
    expect(() => only.pause()).toThrow(EtcdUnsupportedError);

    const client = new Etcd3({ hosts: etcd.endpoints });
    try {
      await client.put("k").value("v");
      expect(await client.get("k").string()).toBe("v");

      await only.kill();
      expect(only.running).toBe(false);
      await only.restart();
      expect(only.running).toBe(true);
      // Same endpoint after the restart, and the data survived in the container's data dir.
      const again = new Etcd3({ hosts: etcd.endpoints });
      try {
        expect(await again.get("k").string()).toBe("v");
      } finally {
        again.close();
      }
    } finally {
      client.close();
    }
  });
});
