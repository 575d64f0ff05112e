import { connectWorker, type Worker, type WorkerOptions } from "@org/worker-sdk";
import { readAssignment } from "./coordinator-state.js";
import { RmCluster } from "./rm-cluster.js";
import { fastFlags, type TestEnv } from "./test-env.js";

/** Polls `fn` until `pred` holds; fails with the last value after `timeoutMs`. */
export async function until<T>(
  fn: () => Promise<T> | T,
  pred: (v: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let v = await fn();
  while (!pred(v)) {
    if (performance.now() > deadline)
      throw new Error(
        `condition not met within ${timeoutMs} ms; last value ${JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? String(x) : x))}`,
      );
    await new Promise((r) => setTimeout(r, 25));
    v = await fn();
  }
  return v;
}

/** Three replica processes on the test env's etcd with the fast flags (stopped after the test). */
export async function startCluster(env: TestEnv, extra: readonly string[] = []): Promise<RmCluster> {
  const c = await RmCluster.start({ etcd: env.etcd.endpoints, args: [...fastFlags, ...extra] });
  env.cleanup(() => c.stop());
  return c;
}

/** An SDK worker of `group` on the cluster (closed after the test). */
export async function startWorker(
  env: TestEnv,
  c: RmCluster,
  nodeId: string,
  group = "g1",
  extra: Partial<WorkerOptions> = {},
): Promise<Worker> {
  const w = await connectWorker({ coordinators: c.addresses, group, nodeId, ...extra });
  env.cleanup(() => w.close());
  return w;
}

/** The group's assignment record in etcd (null before the first version). */
export function assignmentOf(env: TestEnv, c: RmCluster, group = "g1") {
  return readAssignment(env.client, c.namespace, group);
}
