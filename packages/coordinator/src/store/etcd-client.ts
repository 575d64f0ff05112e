import { Etcd3, type ICallable, LeaseClient } from "etcd3";

/** Deadline of every unary etcd call, in ms: a call to a cluster without quorum fails instead of hanging. */
export const etcdCallTimeoutMs = 2000;

/**
 * An etcd3 client whose unary calls carry a deadline (streams, such as watches and
 * lease keep-alives, have none: they live as long as their owner).
 */
export function createEtcdClient(endpoints: readonly string[]): Etcd3 {
  return new Etcd3({
    hosts: [...endpoints],
    dialTimeout: etcdCallTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + etcdCallTimeoutMs }),
  });
}

/**
 * The raw Lease service of a client. etcd3's `Lease` class opens one keep-alive stream per
 * lease and cannot adopt a lease another process granted; the coordinator needs both (a
 * new leader keeps alive the member leases its predecessor granted, over one stream for
 * all of them). etcd3 1.1.2 keeps its connection pool in the internal `pool` field; the
 * dependency is pinned to that version.
 */
export function rawLeaseClient(client: Etcd3): LeaseClient {
  const pool = (client as unknown as { pool: ICallable<unknown> }).pool;
  return new LeaseClient(pool);
}
