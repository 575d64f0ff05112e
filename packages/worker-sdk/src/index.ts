/**
 * `@org/worker-sdk`: what a sharded job imports to join a worker group, follow the leading
 * coordinator, own shards safely and fetch their data.
 *
 * @example
 * ```ts
 * import { connectWorker } from "@org/worker-sdk";
 * const worker = await connectWorker({
 *   coordinators: ["rm-1:50051", "rm-2:50051", "rm-3:50051"],
 *   group: "billing",
 *   nodeId: "billing-7",
 * });
 * await worker.runShards(async (shard, signal) => {
 *   for await (const rec of worker.fetchShardData(shard, { batchSize: 100, signal })) handle(rec);
 * });
 * ```
 */
// First, before anything else is evaluated: an unsupported Node.js stops here with one line.
import "./runtime-check.js";

export { shardOf } from "@org/proto";
export type { BackoffOptions } from "./backoff.js";
export { backoffCeiling, backoffDelay, defaultBackoff } from "./backoff.js";
export type { DataCompression } from "./compression.js";
export { dataTransportCompression } from "./compression.js";
export type { WorkerErrorCode } from "./errors.js";
export { WorkerError } from "./errors.js";
export type {
  GetShardLocationsOptions,
  ShardLocationsInfo,
} from "./get-shard-locations.js";
export { getShardLocations } from "./get-shard-locations.js";
export type { Phase, StabilityWindow } from "./ownership.js";
export type {
  DataRecordInput,
  PutShardDataOptions,
  PutShardDataSummary,
  RejectedRecord,
} from "./put-shard-data.js";
export { putShardData } from "./put-shard-data.js";
export type { PostgresShardLocation, ShardLocation } from "./shard-location.js";
export { parseShardLocation, ShardLocations } from "./shard-location.js";
export type { SubmittedTask, TaskPage, TaskWatchEvent } from "./task-client.js";
export { createTaskClient, TaskClient } from "./task-client.js";
export type { TaskClientErrorCode } from "./task-client-error.js";
export { TaskClientError } from "./task-client-error.js";
export type { TaskClientOptions } from "./task-client-options.js";
export type { TaskErrorCode } from "./task-error.js";
export { TaskError } from "./task-error.js";
export type { Task, TaskHandler, TaskPlacementName } from "./task-handler.js";
export type { TaskFailureInfo, TaskInfo, TaskInput, TaskPlacementKind, TaskState } from "./task-info.js";
export { isFinalTaskState } from "./task-info.js";
export type { TlsClientOptions, TransportSecurityOptions } from "./transport-security.js";
export { connectWorker, Worker } from "./worker.js";
export type { Shard, ShardHandler, WorkerAssignment, WorkerEvent } from "./worker-event.js";
export type { WorkerMetric, WorkerMetricsHook } from "./worker-metrics.js";
export type { WorkerOptions } from "./worker-options.js";
