import { Etcd3 } from "etcd3";
import { afterAll, afterEach, beforeAll } from "vitest";
import { type EtcdCluster, startEtcdCluster } from "../harness/etcd-cluster.js";
import { coordinatorArgs } from "./coordinator-state.js";

/**
 * Coordinator flags for integration tests: short, but with the defaults' ratios (session
 * timeout well above the leader TTL, so a failover never outlasts a worker's self-fence).
 */
export const fastFlags: readonly string[] = coordinatorArgs({
  leaderTtlSec: 2,
  heartbeatIntervalMs: 500,
  sessionTimeoutMs: 5000,
  memberLeaseTtlSec: 8,
  rebalanceDelayMs: 300,
});

/** A real etcd cluster for the test file, an etcd3 client on it, and per-test cleanups. */
export interface TestEnv {
  readonly etcd: EtcdCluster;
  readonly client: Etcd3;
  /** Runs after the current test, last registered first. */
  cleanup(fn: () => Promise<unknown> | unknown): void;
}

/** Registers the vitest hooks that start and stop a `size`-member etcd for this file. */
export function useTestEnv(size: 1 | 3 = 3): TestEnv {
  let etcd: EtcdCluster | undefined;
  let client: Etcd3 | undefined;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  beforeAll(async () => {
    etcd = await startEtcdCluster({ size });
    client = new Etcd3({ hosts: etcd.endpoints });
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    client?.close();
    await etcd?.stop();
  });
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} is not started (use it inside a test)`);
    return v;
  };
  return {
    get etcd() {
      return need(etcd, "etcd");
    },
    get client() {
      return need(client, "the etcd client");
    },
    cleanup: (fn) => {
      cleanups.push(fn);
    },
  };
}
