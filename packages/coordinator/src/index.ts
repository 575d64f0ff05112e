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

export type { MemberSpec, Owners, OwnershipDiff, Plan, PlanInput, StrategyName } from "./assignment.js";
export { diffOwners, ownersEqual, planAssignment, primaryShard, strategyNames } from "./assignment.js";
export type { DataSource, ShardRecord } from "./data-source.js";
export { EtcdDataSource } from "./data-source.js";
export type { CoordinatorErrorCode } from "./errors.js";
export { CoordinatorError } from "./errors.js";
export type { KeyLayout } from "./keys.js";
export { keyLayout } from "./keys.js";
export { LeaseFence } from "./lease-fence.js";
export { createLogger } from "./logger.js";
export type { AssignmentRecord, GroupConfig, MemberRecord } from "./records.js";
export type { ReplicaRole, ReplicaStatus } from "./replica.js";
export { Replica } from "./replica.js";
export type { ReplicaOptions, ReplicaOptionsInput } from "./replica-options.js";
export { resolveReplicaOptions } from "./replica-options.js";
export type { StatusReport } from "./status-report.js";
export { formatStatus, readStatus } from "./status-report.js";
