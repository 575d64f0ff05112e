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

export { type ControlChange, changeControl } from "./cli/admin-commands.js";
export type { StatusReport } from "./cli/status-report.js";
export { formatStatus, readStatus } from "./cli/status-report.js";
export type {
  ConsoleGroup,
  ConsoleMember,
  ConsoleReplica,
  ConsoleTasks,
  ConsoleView,
  TimelineSegment,
} from "./console/console-view.js";
export { sseData } from "./console/replica-http.js";
export type { CoordinatorErrorCode } from "./errors.js";
export { CoordinatorError } from "./errors.js";
export { FencedStore } from "./leadership/fenced-store.js";
export { LeaseFence } from "./leadership/lease-fence.js";
export { type LeaseAck, LeaseKeeper } from "./leadership/lease-keeper.js";
export { createLogger } from "./logger.js";
export type { ReplicaReadiness, ReplicaRole, ReplicaStatus } from "./replica/replica.js";
export { Replica } from "./replica/replica.js";
export type { ReplicaOptions, ReplicaOptionsInput } from "./replica/replica-options.js";
export { resolveReplicaOptions } from "./replica/replica-options.js";
export type { TokenRecord, TokenRole } from "./server/auth-tokens.js";
export { newToken, tokenRoles } from "./server/auth-tokens.js";
export type { AuthMode, Grant, Identity, Right } from "./server/authorizer.js";
export { allows, authModes, certificateGrants } from "./server/authorizer.js";
export { startHttpServer } from "./server/http-server.js";
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
export type {
  DataSink,
  DataSource,
  EtcdDataSourceOptions,
  PutOptions,
  PutResult,
  ShardRecord,
} from "./sharding/data-source.js";
export { EtcdDataSource } from "./sharding/data-source.js";
export type {
  DataSourceConfig,
  EtcdSourceConfig,
  PostgresSourceConfig,
} from "./sharding/data-source-config.js";
export { dataSourceConfigSchema, parseDataSourceConfig } from "./sharding/data-source-config.js";
export type { DataSourceErrorCode } from "./sharding/data-source-error.js";
export { DataSourceError } from "./sharding/data-source-error.js";
export type { DataSourceRegistryOptions, ResolvedDataSource } from "./sharding/data-source-registry.js";
export { DataSourceRegistry } from "./sharding/data-source-registry.js";
export type { PostgresDataSourceOptions, PostgresReadStats } from "./sharding/postgres-data-source.js";
export { classifyPostgresError, PostgresDataSource } from "./sharding/postgres-data-source.js";
export {
  createShardIndexSql,
  createTableSql,
  hashFunctionSql,
  readPageSql,
  shardIndexName,
  shardPredicate,
  upsertSql,
} from "./sharding/postgres-sql.js";
export type { PutShardDataHeaders, PutShardDataLimits } from "./sharding/put-shard-data.js";
export { defaultPutLimits } from "./sharding/put-shard-data.js";
export type { DataReadStats } from "./sharding/shard-data-reader.js";
export type { PostgresShardLocation } from "./sharding/shard-location.js";
export { shardLocation, shardLocations } from "./sharding/shard-location.js";
export {
  createEtcdClient,
  etcdCallTimeoutMs,
  rawLeaseClient,
  revokeEverywhere,
} from "./store/etcd-client.js";
export type { EtcdErrorKind } from "./store/etcd-errors.js";
export { classifyEtcdError } from "./store/etcd-errors.js";
export type { EtcdConnectionState, EtcdHealthSnapshot } from "./store/etcd-health.js";
export type { EtcdSecurity, EtcdSecurityInput } from "./store/etcd-security.js";
export { loadEtcdSecurity } from "./store/etcd-security.js";
export type { KeyLayout, KeyLayoutOptions } from "./store/keys.js";
export { keyLayout } from "./store/keys.js";
export type { AssignmentRecord, GroupConfig, MemberRecord } from "./store/records.js";
export type {
  CancelOutcome,
  ReportOutcome,
  StaleReason,
  TransitionContext,
  WorkerReport,
} from "./tasks/attempts.js";
export {
  applyReport,
  attemptDeadline,
  attemptInFlight,
  attemptTimedOut,
  dispatchable,
  dispatchTask,
  requestCancel,
  workerLost,
} from "./tasks/attempts.js";
export { MemoryTaskStore } from "./tasks/memory-task-store.js";
export type {
  PlacementDecision,
  PlacementLane,
  PlacementTask,
  PlacementWorker,
  ShardOwnership,
} from "./tasks/placement.js";
export { compareTasks, matchesSelector, placeTasks } from "./tasks/placement.js";
export type { AttemptReport, DispatchedTask } from "./tasks/task-attempts.js";
export { TaskAttempts } from "./tasks/task-attempts.js";
export type { TaskBoardOptions } from "./tasks/task-board.js";
export { TaskBoard } from "./tasks/task-board.js";
export type { TaskErrorCode } from "./tasks/task-error.js";
export { TaskError } from "./tasks/task-error.js";
export type { TaskServiceOptions, TaskStatus } from "./tasks/task-grpc.js";
export { addTaskService, notLeaderStatus, taskServiceDefinition, taskStatus } from "./tasks/task-grpc.js";
export type {
  SubmitOutcome,
  TaskHost,
  TaskHostRoute,
  TaskListPage,
  TaskSubmission,
  WatchBatch,
} from "./tasks/task-host.js";
export type { TaskKeys } from "./tasks/task-keys.js";
export { taskKeys } from "./tasks/task-keys.js";
export type { GroupTasks, TaskBoardStats, TaskLedgerOptions } from "./tasks/task-ledger.js";
export type { TaskOptions, TaskOptionsInput } from "./tasks/task-options.js";
export { defaultTaskOptions, resolveTaskOptions } from "./tasks/task-options.js";
export type { StoredTask, TaskPage, TaskPersistence, TaskWrite } from "./tasks/task-persistence.js";
export type { QueuedTask, TaskQueueOptions } from "./tasks/task-queue.js";
export { TaskQueue } from "./tasks/task-queue.js";
export type {
  Blob,
  TaskErrorReasonName,
  TaskFailure,
  TaskPlacementName,
  TaskRecord,
  TaskStateName,
  TaskView,
} from "./tasks/task-record.js";
export {
  checkTaskId,
  decodeBlob,
  encodeBlob,
  generateTaskId,
  isFinalState,
  parseTaskRecord,
  payloadDigest,
  serializeTaskRecord,
  taskRecordSchema,
  taskStates,
} from "./tasks/task-record.js";
export type { TaskHandlers, TaskServiceLimits } from "./tasks/task-service.js";
export { createTaskHandlers } from "./tasks/task-service.js";
export type { TaskStoreOptions } from "./tasks/task-store.js";
export { TaskStore } from "./tasks/task-store.js";
