import {
  castGrpcError,
  GRPCDeadlineExceededError,
  GRPCResourceExhastedError,
  GRPCUnavailableError,
} from "etcd3";
import { describe, expect, it } from "vitest";
import { isSafeToRetry } from "./etcd-client.js";

const notSent = () =>
  castGrpcError(
    Object.assign(new Error("14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED"), {
      code: 14,
    }),
  );
const sentButUnavailable = () =>
  castGrpcError(Object.assign(new Error("14 UNAVAILABLE: etcdserver: leader changed"), { code: 14 }));

describe("isSafeToRetry (etcd3's global retry policy)", () => {
  it("retries reads and lease grant/revoke on UNAVAILABLE, as Go's clientv3 marks them repeatable", () => {
    expect(isSafeToRetry("KV.range", sentButUnavailable())).toBe(true);
    expect(isSafeToRetry("Lease.leaseGrant", sentButUnavailable())).toBe(true);
  });

  it("retries a write only when grpc-js never sent it", () => {
    expect(notSent()).toBeInstanceOf(GRPCUnavailableError);
    expect(isSafeToRetry("KV.txn", notSent())).toBe(true);
    expect(isSafeToRetry("KV.txn", sentButUnavailable())).toBe(false);
    expect(isSafeToRetry("KV.put", sentButUnavailable())).toBe(false);
  });

  it("never retries a deadline (the write may have committed) or RESOURCE_EXHAUSTED", () => {
    expect(isSafeToRetry("KV.txn", new GRPCDeadlineExceededError("4 DEADLINE_EXCEEDED"))).toBe(false);
    expect(isSafeToRetry("KV.range", new GRPCDeadlineExceededError("4 DEADLINE_EXCEEDED"))).toBe(false);
    expect(isSafeToRetry("KV.range", new GRPCResourceExhastedError("8 RESOURCE_EXHAUSTED"))).toBe(false);
  });
});
