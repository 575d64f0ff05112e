import { BrokenCircuitError } from "cockatiel";
import {
  ClientClosedError,
  castGrpcError,
  EtcdError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
} from "etcd3";
import { describe, expect, it } from "vitest";
import { CoordinatorError } from "../errors.js";
import {
  classifyEtcdError,
  coordinatorCodeFor,
  EtcdWatchCancelledError,
  etcdFailure,
  etcdRetryBackoff,
} from "./etcd-errors.js";

/** An error as grpc-js rejects a call with it (a plain Error with a numeric code), cast as etcd3 casts it. */
function fromGrpc(code: number, details: string): Error {
  const names: Record<number, string> = {
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    11: "OUT_OF_RANGE",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
  };
  return castGrpcError(Object.assign(new Error(`${code} ${names[code]}: ${details}`), { code }));
}

describe("classifyEtcdError", () => {
  it.each([
    [8, "etcdserver: mvcc: database space exceeded", "nospace"],
    [8, "etcdserver: too many requests", "unavailable"],
    [8, "Received message larger than max (5524833 vs 4194304)", "too_large"],
    [3, "etcdserver: request is too large", "too_large"],
    [11, "etcdserver: mvcc: required revision has been compacted", "compacted"],
    [14, "No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1", "unavailable"],
    [14, "etcdserver: no leader", "unavailable"],
    [4, "Deadline exceeded after 2.001s", "unavailable"],
    [7, "etcdserver: permission denied", "auth"],
    [16, "etcdserver: invalid auth token", "auth"],
    [3, "etcdserver: key is not provided", "other"],
  ] as const)("status %i %s -> %s", (code, details, kind) => {
    expect(classifyEtcdError(fromGrpc(code, details))).toBe(kind);
  });

  it("classifies a raw grpc-js error (as a broken watch stream reports it) by its code", () => {
    const raw = Object.assign(new Error("14 UNAVAILABLE: Connection dropped"), { code: 14 });
    expect(classifyEtcdError(raw)).toBe("unavailable");
  });

  it("classifies etcd3's own failures: an open circuit, a closed client, a cancelled watch", () => {
    expect(classifyEtcdError(new BrokenCircuitError())).toBe("unavailable");
    expect(classifyEtcdError(new ClientClosedError("KV"))).toBe("other");
    // etcd 3.4 cancels a live watch (no reason given) only when its revision was compacted.
    expect(classifyEtcdError(new EtcdWatchCancelledError(new EtcdError("Watcher canceled: ")))).toBe(
      "compacted",
    );
    expect(
      classifyEtcdError(
        new EtcdWatchCancelledError(new EtcdPermissionDeniedError("Watcher canceled: denied")),
      ),
    ).toBe("auth");
  });

  it("follows cause chains (a CoordinatorError wrapping an etcd error) and maps our own codes", () => {
    const wrapped = new CoordinatorError("deposed", "x", {
      cause: new CoordinatorError("etcd_unavailable", "no keep-alive acknowledged"),
    });
    expect(classifyEtcdError(wrapped)).toBe("unavailable");
    expect(classifyEtcdError(etcdFailure(new GRPCDeadlineExceededError("4 DEADLINE_EXCEEDED"), "w"))).toBe(
      "unavailable",
    );
    expect(classifyEtcdError(new Error("boom"))).toBe("other");
    expect(classifyEtcdError("not an error")).toBe("other");
  });

  it("wraps failures in CoordinatorErrors whose code says what retrying can do", () => {
    const nospace = etcdFailure(fromGrpc(8, "etcdserver: mvcc: database space exceeded"), "fenced write");
    expect(nospace.code).toBe("etcd_nospace");
    expect(nospace.message).toContain("fenced write: 8 RESOURCE_EXHAUSTED");
    expect(etcdFailure(new GRPCUnavailableError("14 UNAVAILABLE"), "w").code).toBe("etcd_unavailable");
    expect(coordinatorCodeFor("auth")).toBe("etcd_auth");
    expect(coordinatorCodeFor("too_large")).toBe("etcd_failed");
  });

  it("retries NOSPACE slowly (2 s, capped at 10 s) and transient failures within a second, capped at 5 s", () => {
    expect(etcdRetryBackoff("nospace")).toEqual({ baseMs: 2000, maxMs: 10_000 });
    expect(etcdRetryBackoff("unavailable")).toEqual({ baseMs: 1000, maxMs: 5000 });
  });
});
