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
export type { ReplicaRole, ReplicaStatus } from "./replica/replica.js";
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
export type { DataLayout } from "./sharding/data-layout.js";
export {
  bucketOf,
  bucketsForShard,
  dataLayoutSchema,
  defaultBuckets,
  readFactor,
} from "./sharding/data-layout.js";
export type {
  DataRecordInput,
  LoadShardDataOptions,
  LoadShardDataResult,
} from "./sharding/data-loader.js";
export { loadShardData, sequentialRecords } from "./sharding/data-loader.js";
export type { DataSource, EtcdDataSourceOptions, ShardRecord } from "./sharding/data-source.js";
export { EtcdDataSource } from "./sharding/data-source.js";
export type { DataReadStats } from "./sharding/shard-data-reader.js";
export type { KeyLayout, KeyLayoutOptions } from "./store/keys.js";
export { keyLayout } from "./store/keys.js";
export type { AssignmentRecord, GroupConfig, MemberRecord } from "./store/records.js";
