import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Client, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import {
  DataRecordSchema,
  type PutShardDataResponse,
  PutShardDataResponseSchema,
  shardServiceName,
} from "@org/proto";
import type { Etcd3 } from "etcd3";
import { CoordinatorError } from "../errors.js";
import type { DataRecordInput } from "../sharding/data-loader.js";
import type { KeyLayout } from "../store/keys.js";

/** Options of {@link uploadShardData}. */
export interface UploadOptions {
  /** Replica addresses to try in order (any replica serves PutShardData). */
  readonly coordinators: readonly string[];
  readonly group: string;
  readonly expectedRecords?: number;
  readonly buckets?: number;
  /** Compress the upload with gzip. @default false */
  readonly gzip?: boolean;
  /** TLS to the replicas: their CA, and a client certificate for `--auth mtls` (`shard-data://<group>`). @default plaintext */
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  /** A bearer token with the `admin` role (`--auth tokens`). Never logged. */
  readonly token?: string;
}

/**
 * The replicas' advertised addresses, from their election keys (every replica campaigns, so
 * every live one has a key): what `data load` uploads to when no `--coordinator` is given.
 */
export async function discoverCoordinators(client: Etcd3, keys: KeyLayout): Promise<string[]> {
  const kvs = await client.getAll().prefix(keys.electionPrefix).strings();
  const out: string[] = [];
  for (const raw of Object.values(kvs)) {
    try {
      const v = JSON.parse(raw) as { address?: unknown };
      if (typeof v.address === "string" && v.address !== "" && !out.includes(v.address)) out.push(v.address);
    } catch {
      // Not a replica's key: skip it.
    }
  }
  return out;
}

const identity = (b: Buffer) => b;

/**
 * Streams `records` to a replica with one PutShardData call (grpc-js, writes paced by HTTP/2
 * flow control) and resolves with its summary. Tries the next replica only when one is
 * unreachable before any record was sent.
 */
export async function uploadShardData(
  records: Iterable<DataRecordInput>,
  options: UploadOptions,
): Promise<PutShardDataResponse> {
  let last: unknown;
  for (const address of options.coordinators) {
    const tls = options.tls;
    const creds =
      tls === undefined
        ? credentials.createInsecure()
        : credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
    const client = new Client(address, creds, {
      "grpc.max_send_message_length": 8 << 20,
      ...(options.gzip === true ? { "grpc.default_compression_algorithm": 2 } : {}),
    });
    let sent = 0;
    try {
      return await new Promise<PutShardDataResponse>((resolve, reject) => {
        const md = new Metadata();
        md.set("x-shard-group", options.group);
        if (options.token !== undefined) md.set("authorization", `Bearer ${options.token}`);
        if (options.expectedRecords !== undefined)
          md.set("x-shard-expected-records", String(options.expectedRecords));
        if (options.buckets !== undefined) md.set("x-shard-buckets", String(options.buckets));
        const call = client.makeClientStreamRequest<Buffer, PutShardDataResponse>(
          `/${shardServiceName}/PutShardData`,
          identity,
          (b: Buffer) => fromBinary(PutShardDataResponseSchema, b),
          md,
          {},
          (err: ServiceError | null, res?: PutShardDataResponse) => {
            if (err !== null || res === undefined) reject(err ?? new Error("no response"));
            else resolve(res);
          },
        );
        const encoder = new TextEncoder();
        const it = records[Symbol.iterator]();
        const pump = () => {
          for (;;) {
            const next = it.next();
            if (next.done === true) {
              call.end();
              return;
            }
            const r = next.value;
            const payload = typeof r.payload === "string" ? encoder.encode(r.payload) : r.payload;
            sent += 1;
            const ok = call.write(
              Buffer.from(toBinary(DataRecordSchema, create(DataRecordSchema, { id: r.id, payload }))),
            );
            if (!ok) {
              call.once("drain", pump);
              return;
            }
          }
        };
        pump();
      });
    } catch (e) {
      last = e;
      // Another replica can help only if this one was unreachable before anything was sent.
      if (sent > 0 || (e as Partial<ServiceError>).code !== status.UNAVAILABLE) break;
    } finally {
      client.close();
    }
  }
  const e = last as Partial<ServiceError> | undefined;
  const trailer = (k: string) => e?.metadata?.get(k)[0];
  const progress =
    trailer("x-put-received") === undefined
      ? ""
      : ` (received ${String(trailer("x-put-received"))}, committed ${String(trailer("x-put-written"))})`;
  throw new CoordinatorError(
    e?.code === status.FAILED_PRECONDITION || e?.code === status.INVALID_ARGUMENT
      ? "invalid_config"
      : "etcd_unavailable",
    `PutShardData to ${options.coordinators.join(", ")} failed: ${e?.details ?? String(last)}${progress}`,
    { cause: last },
  );
}
