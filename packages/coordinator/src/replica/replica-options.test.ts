import { describe, expect, it } from "vitest";
import { CoordinatorError } from "../errors.js";
import { resolveReplicaOptions } from "./replica-options.js";

describe("resolveReplicaOptions", () => {
  it("fills the documented defaults", () => {
    const o = resolveReplicaOptions({ id: "rm-1" });
    expect(o).toMatchObject({
      etcdEndpoints: ["http://127.0.0.1:2379"],
      listen: "127.0.0.1:50051",
      namespace: "/shardmgr",
      leaderTtlSec: 3,
      heartbeatIntervalMs: 1000,
      sessionTimeoutMs: 5000,
      memberLeaseTtlSec: 15,
      rebalanceDelayMs: 1000,
      strategy: "modulo",
      httpListen: "",
    });
    expect(o.advertise).toMatch(/:50051$/);
    expect(o.advertise.startsWith("0.0.0.0")).toBe(false);
    expect(o).toMatchObject({ tlsCertFile: "", tlsKeyFile: "", tlsClientCaFile: "", insecure: false });
  });

  it("binds every address by default only with TLS or --insecure", () => {
    expect(resolveReplicaOptions({ tlsCertFile: "c.pem", tlsKeyFile: "k.pem" }).listen).toBe("0.0.0.0:50051");
    expect(resolveReplicaOptions({ insecure: "true" })).toMatchObject({
      listen: "0.0.0.0:50051",
      insecure: true,
    });
    expect(resolveReplicaOptions({ listen: "[::1]:7000" }).listen).toBe("[::1]:7000");
    expect(resolveReplicaOptions({ listen: "localhost:7000", httpListen: "127.0.0.2:8000" }).httpListen).toBe(
      "127.0.0.2:8000",
    );
  });

  it("parses strings from flags and env vars", () => {
    const o = resolveReplicaOptions({
      etcdEndpoints: "http://a:1, http://b:2",
      sessionTimeoutMs: "9000",
      strategy: "sticky",
      shards: "64",
    });
    expect(o.etcdEndpoints).toEqual(["http://a:1", "http://b:2"]);
    expect(o.sessionTimeoutMs).toBe(9000);
    expect(o.strategy).toBe("sticky");
    expect(o.shards).toBe(64);
  });

  const bad: [string, Parameters<typeof resolveReplicaOptions>[0], RegExp][] = [
    [
      "session timeout not above two heartbeats",
      { heartbeatIntervalMs: 1000, sessionTimeoutMs: 2000 },
      /session-timeout/,
    ],
    [
      "member lease not longer than the leader TTL",
      { leaderTtlSec: 10, memberLeaseTtlSec: 10, sessionTimeoutMs: 12_000 },
      /member-lease-ttl/,
    ],
    ["session timeout shorter than a failover", { leaderTtlSec: 5, sessionTimeoutMs: 5500 }, /leader-ttl/],
    [
      "member lease not longer than the session timeout",
      { memberLeaseTtlSec: 5, sessionTimeoutMs: 6000 },
      /member-lease-ttl/,
    ],
    ["unknown strategy", { strategy: "random" }, /strategy/],
    ["non-numeric interval", { heartbeatIntervalMs: "fast" }, /heartbeat-interval/],
    ["bad listen", { listen: "50051" }, /listen/],
    ["bad endpoint", { etcdEndpoints: "127.0.0.1:2379" }, /etcd/],
    ["bad namespace", { namespace: "shardmgr" }, /namespace/],
    ["bad id", { id: "rm 1" }, /id/],
    [
      "plaintext on a non-loopback address",
      { listen: "0.0.0.0:50051" },
      /not a loopback address.*--insecure/,
    ],
    ["plaintext HTTP on a non-loopback address", { httpListen: "10.0.0.1:9464" }, /http-listen/],
    ["a certificate without its key", { tlsCertFile: "c.pem" }, /--tls-key/],
    ["a client CA without a certificate", { tlsClientCaFile: "ca.pem" }, /--tls-client-ca/],
    ["an unknown auth mode", { auth: "password" }, /--auth/],
    [
      "mutual-TLS auth without a client CA",
      { auth: "mtls", tlsCertFile: "c.pem", tlsKeyFile: "k.pem" },
      /--tls-client-ca/,
    ],
  ];
  for (const [name, input, re] of bad) {
    it(`rejects ${name} with invalid_config`, () => {
      let err: unknown;
      try {
        resolveReplicaOptions(input);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CoordinatorError);
      expect((err as CoordinatorError).code).toBe("invalid_config");
      expect((err as CoordinatorError).message).toMatch(re);
      expect((err as CoordinatorError).message).not.toContain("\n");
    });
  }
});
