/**
 * The shard coordinator (ResourceManager) replica as a library: start one in-process, or
 * read the state it keeps in etcd.
 *
 * @example
 * ```ts
 * import { Replica, createLogger, resolveReplicaOptions } from "@org/coordinator";
 * const options = resolveReplicaOptions({ etcdEndpoints: ["http://127.0.0.1:2379"], listen: "127.0.0.1:50051" });
 * const replica = await Replica.start(options, createLogger(options.id));
 * // ...
 * await replica.close();
 * ```
 */

export type { StatusReport } from "./cli/status-report.js";
export { formatStatus, readStatus } from "./cli/status-report.js";
export type { CoordinatorErrorCode } from "./errors.js";
export { CoordinatorError } from "./errors.js";
export { LeaseFence } from "./leadership/lease-fence.js";
export { createLogger } from "./logger.js";
export type { ReplicaReadiness, ReplicaRole, ReplicaStatus } from "./replica/replica.js";
export { Replica } from "./replica/replica.js";
export type { ReplicaOptions, ReplicaOptionsInput } from "./replica/replica-options.js";
export { resolveReplicaOptions } from "./replica/replica-options.js";
export type {
  MemberSpec,
  Owners,
  OwnershipDiff,
  Plan,
  PlanInput,
  StrategyName,
} from "./sharding/assignment.js";
export {
  diffOwners,
  ownersEqual,
  planAssignment,
  primaryShard,
  strategyNames,
} from "./sharding/assignment.js";
export type { DataSource, ShardRecord } from "./sharding/data-source.js";
export { EtcdDataSource } from "./sharding/data-source.js";
export { createEtcdClient, etcdCallTimeoutMs } from "./store/etcd-client.js";
export type { EtcdErrorKind } from "./store/etcd-errors.js";
export { classifyEtcdError } from "./store/etcd-errors.js";
export type { EtcdConnectionState, EtcdHealthSnapshot } from "./store/etcd-health.js";
export type { KeyLayout } from "./store/keys.js";
export { keyLayout } from "./store/keys.js";
export type { AssignmentRecord, GroupConfig, MemberRecord } from "./store/records.js";
