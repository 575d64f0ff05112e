import { create } from "@bufbuild/protobuf";
import { Metadata, status } from "@grpc/grpc-js";
import {
  type DataRecord,
  type PutShardDataError,
  PutShardDataErrorSchema,
  type PutShardDataResponse,
  PutShardDataResponseSchema,
} from "@org/proto";
import { checkName } from "../server/names.js";
import { StatusError } from "../server/shard-server.js";
import { maxBuckets } from "./data-layout.js";
import type { PutResult, ShardRecord } from "./data-source.js";
import type { DataSourceRegistry } from "./data-source-registry.js";
import { maxIdBytes } from "./postgres-sql.js";
import { dataSourceStatus } from "./shard-queries.js";

/** Limits of one PutShardData call. */
export interface PutShardDataLimits {
  /**
   * Largest record (id plus payload, bytes); a larger one is rejected alone
   * (RESOURCE_EXHAUSTED in the answer's errors). The etcd source lowers it to what one of its
   * transactions can hold (about 1 MiB less the key).
   * @default 1048576
   */
  readonly maxRecordBytes: number;
  /** Records one call may carry; past it the call ends with RESOURCE_EXHAUSTED. @default 1000000 */
  readonly maxCallRecords: number;
  /** Bytes (ids plus payloads) one call may carry; past it the call ends with RESOURCE_EXHAUSTED. @default 536870912 */
  readonly maxCallBytes: number;
  /** Rejected records listed in the answer. @default 10 */
  readonly maxErrors: number;
}

export const defaultPutLimits: PutShardDataLimits = {
  maxRecordBytes: 1 << 20,
  maxCallRecords: 1_000_000,
  maxCallBytes: 512 << 20,
  maxErrors: 10,
};

/** What a PutShardData call says about itself in its metadata. */
export interface PutShardDataHeaders {
  readonly group: string;
  readonly expectedRecords?: number;
  readonly buckets?: number;
}

/**
 * Reads the call's metadata (`x-shard-group`, `x-shard-expected-records`, `x-shard-buckets`);
 * throws INVALID_ARGUMENT for a malformed number.
 */
export function putHeadersFrom(get: (key: string) => string | undefined): PutShardDataHeaders {
  const num = (key: string, min: number, max: number): number | undefined => {
    const raw = get(key);
    if (raw === undefined || raw === "") return undefined;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new StatusError(
        status.INVALID_ARGUMENT,
        `${key} must be an integer in ${min}..${max}, got ${raw}`,
      );
    return n;
  };
  const expectedRecords = num("x-shard-expected-records", 0, Number.MAX_SAFE_INTEGER);
  const buckets = num("x-shard-buckets", 1, maxBuckets);
  return {
    group: get("x-shard-group") ?? "",
    ...(expectedRecords === undefined ? {} : { expectedRecords }),
    ...(buckets === undefined ? {} : { buckets }),
  };
}

/** Why `rec` cannot be stored, or undefined. */
function recordProblem(
  rec: DataRecord,
  maxRecordBytes: number,
): { code: status; message: string } | undefined {
  if (rec.id === "") return { code: status.INVALID_ARGUMENT, message: "the id is empty" };
  const idBytes = Buffer.byteLength(rec.id);
  if (idBytes > maxIdBytes)
    return { code: status.INVALID_ARGUMENT, message: `the id is ${idBytes} bytes, above ${maxIdBytes}` };
  if (rec.id.includes("\0"))
    return { code: status.INVALID_ARGUMENT, message: "the id contains a NUL character" };
  const size = idBytes + rec.payload.length;
  if (size > maxRecordBytes)
    return {
      code: status.RESOURCE_EXHAUSTED,
      message: `the record is ${size} bytes, above the per-record limit of ${maxRecordBytes}`,
    };
  return undefined;
}

/**
 * PutShardData: validates each record (a bad one is rejected alone and reported), enforces
 * the per-call limits, and streams the rest into the group's data source, which writes them
 * in batches, idempotently by id. Resolves with the summary once everything accepted is
 * committed; fails with a StatusError whose trailing metadata (`x-put-received`,
 * `x-put-written`, `x-put-rejected`) says how far it got: the records committed stay, and
 * sending them again is harmless.
 */
export async function putShardData(
  sources: Pick<DataSourceRegistry, "resolve" | "maxRecordBytes">,
  headers: PutShardDataHeaders,
  records: AsyncIterable<DataRecord>,
  signal: AbortSignal,
  limits: PutShardDataLimits = defaultPutLimits,
): Promise<PutShardDataResponse> {
  const bad = checkName("group", headers.group);
  if (bad !== undefined) throw new StatusError(status.INVALID_ARGUMENT, `x-shard-group: ${bad}`);
  let resolved: Awaited<ReturnType<DataSourceRegistry["resolve"]>>;
  try {
    resolved = await sources.resolve(headers.group);
  } catch (e) {
    throw dataSourceStatus(e);
  }
  const maxRecordBytes = Math.min(limits.maxRecordBytes, sources.maxRecordBytes(headers.group, resolved));
  let received = 0;
  let bytes = 0;
  let rejected = 0;
  const errors: PutShardDataError[] = [];
  let committed: PutResult = { written: 0, unchanged: 0, batches: 0 };
  const progress = () => {
    const md = new Metadata();
    md.set("x-put-received", String(received));
    md.set("x-put-written", String(committed.written + committed.unchanged));
    md.set("x-put-rejected", String(rejected));
    return md;
  };

  async function* accepted(): AsyncGenerator<ShardRecord, void, undefined> {
    for await (const rec of records) {
      received += 1;
      bytes += Buffer.byteLength(rec.id) + rec.payload.length;
      if (received > limits.maxCallRecords || bytes > limits.maxCallBytes)
        throw new StatusError(
          status.RESOURCE_EXHAUSTED,
          received > limits.maxCallRecords
            ? `more than ${limits.maxCallRecords} records in one PutShardData call: send the rest in another call`
            : `more than ${limits.maxCallBytes} bytes in one PutShardData call: send the rest in another call`,
        );
      const problem = recordProblem(rec, maxRecordBytes);
      if (problem !== undefined) {
        rejected += 1;
        if (errors.length < limits.maxErrors)
          errors.push(
            create(PutShardDataErrorSchema, {
              index: BigInt(received - 1),
              id: rec.id.slice(0, 128),
              code: problem.code,
              message: problem.message,
            }),
          );
        continue;
      }
      yield { id: rec.id, payload: rec.payload };
    }
  }

  try {
    committed = await resolved.source.put(headers.group, accepted(), {
      signal,
      ...(headers.expectedRecords === undefined ? {} : { expectedRecords: headers.expectedRecords }),
      ...(headers.buckets === undefined ? {} : { buckets: headers.buckets }),
      onCommitted: (soFar) => {
        committed = soFar;
      },
    });
  } catch (e) {
    const s = dataSourceStatus(e);
    const md = s.metadata ?? new Metadata();
    md.merge(progress());
    throw new StatusError(
      s.code,
      `${s.message} (received ${received}, committed ${committed.written + committed.unchanged})`,
      md,
    );
  }
  return create(PutShardDataResponseSchema, {
    received: BigInt(received),
    written: BigInt(committed.written),
    unchanged: BigInt(committed.unchanged),
    rejected: BigInt(rejected),
    errors,
    batches: BigInt(committed.batches),
    source: resolved.sourceConfig.kind,
  });
}
