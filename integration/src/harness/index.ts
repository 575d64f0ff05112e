/**
 * Test harness for real-etcd integration tests and fault drills: throwaway etcd
 * clusters with crash/pause/restart controls, a TCP proxy to partition a single
 * client, and a virtual network of hosts in network namespaces to partition anything.
 */

export { ETCD_IMAGE } from "./container-etcd-cluster.js";
export { type CountingProxy, startCountingProxy } from "./counting-proxy.js";
export { isDockerReachable } from "./docker-reachable.js";
export {
  EtcdHealthTimeoutError,
  EtcdMemberStateError,
  EtcdPortInUseError,
  EtcdStartError,
  EtcdUnsupportedError,
  HarnessConfigError,
  HarnessError,
  NetworkCommandError,
} from "./errors.js";
export {
  type EtcdCluster,
  type EtcdClusterOptions,
  startEtcdCluster,
} from "./etcd-cluster.js";
export { type HealthProbe, probeHealth } from "./etcd-health.js";
export { findEtcdLeader } from "./etcd-leader.js";
export { DEFAULT_HEALTH_TIMEOUT_MS, type EtcdMember, type WaitHealthyOptions } from "./etcd-member.js";
export { ETCD_PROVIDER_ENV, type EtcdProvider, resolveEtcdProvider } from "./etcd-provider.js";
export { getFreePort, getFreePorts, LOOPBACK_HOST } from "./free-port.js";
export { listNamespaces, NETNS_PREFIX, removeOrphanedNamespaces } from "./netns-registry.js";
export {
  findPostgresBin,
  type PostgresOptions,
  type PostgresServer,
  PostgresStartError,
  startPostgres,
} from "./postgres-server.js";
export { loopbackHost, type ProcessHost } from "./process-host.js";
export { isProcessAlive, TEMP_DIR_PREFIX } from "./process-registry.js";
export type { ProxyTarget } from "./proxy-link.js";
export { startTcpProxy, type TcpProxy, type TcpProxyMode, type TcpProxyOptions } from "./tcp-proxy.js";
export { type Hosts, type NetHost, VirtualNetwork } from "./virtual-network.js";
