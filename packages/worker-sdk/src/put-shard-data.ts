import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { type DataRecord, DataRecordSchema, ShardService } from "@org/proto";
import { type DataCompression, dataTransportCompression } from "./compression.js";
import { WorkerError, type WorkerErrorCode } from "./errors.js";
import { authFailure } from "./stream-failure.js";
import { resolveTransportSecurity, type TransportSecurityOptions } from "./transport-security.js";

/** One record to upload. A string payload is sent as its UTF-8 bytes. */
export interface DataRecordInput {
  readonly id: string;
  readonly payload: string | Uint8Array;
}

/** Options of {@link putShardData}. */
export interface PutShardDataOptions extends TransportSecurityOptions {
  /** Coordinator addresses (`host:port`); any replica serves uploads. Tried in order until one answers. */
  readonly coordinators: readonly string[];
  /** Compress the upload. @default "none" */
  readonly compression?: DataCompression;
  /** Records you are about to send (the etcd source sizes a new group's layout from it). */
  readonly expectedRecords?: number;
  /** Bucket count of a new etcd layout (docs/data.md). */
  readonly buckets?: number;
  readonly signal?: AbortSignal;
}

/** One record the coordinator rejected. */
export interface RejectedRecord {
  /** Its position in the upload, from 0. */
  readonly index: number;
  readonly id: string;
  /** `invalid_argument` (a bad id) or `resource_exhausted` (over the per-record limit). */
  readonly code: string;
  readonly message: string;
}

/** What an upload did, once everything accepted is committed. */
export interface PutShardDataSummary {
  readonly received: number;
  /** Stored: new ids and changed payloads. */
  readonly written: number;
  /** Already stored with the same payload (PostgreSQL; the etcd source counts them as written). */
  readonly unchanged: number;
  readonly rejected: number;
  /** The first rejected records (at most 10). */
  readonly errors: readonly RejectedRecord[];
  readonly batches: number;
  /** The group's data source: `etcd` or `postgres`. */
  readonly source: string;
}

const codeNames = new Map<number, string>([
  [Code.InvalidArgument, "invalid_argument"],
  [Code.ResourceExhausted, "resource_exhausted"],
]);

/** How far a failed upload got, from the call's trailers. */
function progressOf(e: ConnectError): string {
  const received = e.metadata.get("x-put-received");
  const written = e.metadata.get("x-put-written");
  return received === null ? "" : ` (received ${received}, committed ${written ?? "0"})`;
}

function failure(e: unknown): WorkerError {
  if (e instanceof WorkerError) return e;
  const ce = ConnectError.from(e);
  const refused = authFailure(ce);
  if (refused !== undefined) return refused;
  const code: WorkerErrorCode =
    ce.code === Code.InvalidArgument || ce.code === Code.ResourceExhausted
      ? "invalid_argument"
      : ce.code === Code.FailedPrecondition
        ? "failed_precondition"
        : ce.code === Code.Canceled
          ? "closed"
          : "unavailable";
  return new WorkerError(code, `${ce.rawMessage}${progressOf(ce)}`, { cause: ce });
}

/**
 * Streams `records` into `group`'s dataset with one client-streaming PutShardData call
 * (HTTP/2 flow control paces the producer), and resolves with the summary once the
 * coordinator has committed every accepted record. Writes are idempotent by id: uploading
 * again after a failure is safe (ids already stored with the same payload count as
 * `unchanged`). Records with a bad id or over the per-record limit are rejected one by one
 * and listed in the summary; the call fails with a {@link WorkerError}: `invalid_options`
 * past the per-call limits, `refused` when the group's data source is misconfigured (a bad
 * table, refused credentials), `unavailable` when the store or every coordinator is down.
 * The next coordinator is tried only while no record has been taken from `records` yet.
 *
 * @example
 * ```ts
 * const summary = await putShardData("billing", readJsonLines("orders.jsonl"), {
 *   coordinators: ["rm-1:50051", "rm-2:50051"],
 *   compression: "gzip",
 * });
 * if (summary.rejected > 0) console.error(summary.errors);
 * ```
 */
export async function putShardData(
  group: string,
  records: AsyncIterable<DataRecordInput> | Iterable<DataRecordInput>,
  options: PutShardDataOptions,
): Promise<PutShardDataSummary> {
  if (options.coordinators.length === 0)
    throw new WorkerError("invalid_options", "putShardData needs at least one coordinator");
  const security = resolveTransportSecurity(options);
  const headers: Record<string, string> = { "x-shard-group": group };
  if (options.expectedRecords !== undefined)
    headers["x-shard-expected-records"] = String(options.expectedRecords);
  if (options.buckets !== undefined) headers["x-shard-buckets"] = String(options.buckets);
  const encoder = new TextEncoder();
  let pulled = false;
  async function* messages(): AsyncGenerator<DataRecord> {
    for await (const r of records) {
      pulled = true;
      yield create(DataRecordSchema, {
        id: r.id,
        payload: typeof r.payload === "string" ? encoder.encode(r.payload) : r.payload,
      });
    }
  }
  let last: unknown;
  for (const target of options.coordinators) {
    const baseUrl = `${security.scheme}://${target}`;
    const manager = new Http2SessionManager(
      baseUrl,
      { pingIntervalMs: 10_000, pingTimeoutMs: 5_000 },
      security.sessionOptions,
    );
    try {
      const client = createClient(
        ShardService,
        createGrpcTransport({
          baseUrl,
          sessionManager: manager,
          interceptors: security.interceptors,
          ...dataTransportCompression(options.compression ?? "none"),
        }),
      );
      const res = await client.putShardData(messages(), {
        headers,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      return {
        received: Number(res.received),
        written: Number(res.written),
        unchanged: Number(res.unchanged),
        rejected: Number(res.rejected),
        errors: res.errors.map((e) => ({
          index: Number(e.index),
          id: e.id,
          code: codeNames.get(e.code) ?? String(e.code),
          message: e.message,
        })),
        batches: Number(res.batches),
        source: res.source,
      };
    } catch (e) {
      last = e;
      if (options.signal?.aborted === true) throw new WorkerError("closed", "upload aborted", { cause: e });
      const ce = ConnectError.from(e);
      // Another replica can help only if nothing was consumed and this one could not serve.
      if (pulled || ce.code !== Code.Unavailable) throw failure(e);
    } finally {
      manager.abort();
    }
  }
  throw failure(last);
}
