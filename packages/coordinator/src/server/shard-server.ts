import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import {
  type CoordinatorMessage,
  CoordinatorMessageSchema,
  DataPageSchema,
  type DataRecord,
  DataRecordSchema,
  type FetchShardDataRequest,
  FetchShardDataRequestSchema,
  type GetShardInfoRequest,
  GetShardInfoRequestSchema,
  type GetShardInfoResponse,
  GetShardInfoResponseSchema,
  type PutShardDataResponse,
  PutShardDataResponseSchema,
  shardServiceName,
} from "@org/proto";
import type { Logger } from "pino";
import { encodeDataPages, encodeDataRecord } from "../sharding/data-record-codec.js";
import type { Authorizer, Right } from "./authorizer.js";
import { gzipResponses } from "./gzip-responses.js";

/** A call failed with this gRPC status (thrown by handlers, sent by the server). */
export class StatusError extends Error {
  override name = "StatusError";
  readonly code: status;
  readonly metadata: Metadata | undefined;
  constructor(code: status, details: string, metadata?: Metadata) {
    super(details);
    this.code = code;
    this.metadata = metadata;
  }
}

/** What serves the four RPCs; the server only does transport. */
export interface ShardHandlers {
  heartbeatStream(call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>): void;
  getShardInfo(req: GetShardInfoRequest, signal: AbortSignal): Promise<GetShardInfoResponse>;
  /** Serves FetchShardData and FetchShardDataPages alike; the transport decides the framing. */
  fetchShardData(
    req: FetchShardDataRequest,
    signal: AbortSignal,
    /** Sends records in id order; returns a promise only when the stream pushes back. */
    writePage: (page: readonly DataRecordLike[]) => Promise<void> | undefined,
  ): Promise<void>;
  /**
   * A client stream of records: `records` pulls them as the handler consumes them (HTTP/2
   * flow control holds the producer meanwhile); `metadata` carries `x-shard-group`.
   */
  putShardData(
    metadata: Metadata,
    records: AsyncIterable<DataRecord>,
    signal: AbortSignal,
  ): Promise<PutShardDataResponse>;
}

export interface ShardServerOptions {
  readonly listen: string;
  readonly maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one client connection may open. */
  readonly maxStreamsPerConnection: number;
  readonly log: Logger;
  /**
   * Checks every data call's credentials and rights (GetShardInfo and FetchShardData: the
   * `worker` right for the request's group and node id; PutShardData: `data-write` for its
   * `x-shard-group`). HeartbeatStream is checked by its handler (the group is in the Hello).
   */
  readonly auth?: Authorizer | undefined;
  /** TLS (see tls-credentials.ts); plaintext when absent. */
  readonly credentials?: ServerCredentials | undefined;
  /** Adds further services (TaskService) to the same server before it binds. */
  readonly register?: (server: Server) => void;
}

/** A record as a data source yields it. */
export interface DataRecordLike {
  readonly id: string;
  readonly payload: Uint8Array;
}

/** The most bytes one DataPage message carries (one larger record goes alone). */
const maxPageMessageBytes = 1 << 20;

const identity = (b: Buffer) => b;
// A Buffer view of the encoded bytes (no second copy: this runs once per ack).
const asBuffer = (u8: Uint8Array) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);

/**
 * The `shard.v1.ShardService` transport, a plain grpc-js `Server` with protobuf-es
 * serializers. It is the seam DESIGN.md asks for: swapping in connect-node means rewriting
 * this file only. Requests are decoded in the handlers (not in grpc-js's deserializer), so
 * undecodable bytes get INVALID_ARGUMENT instead of grpc-js's generic INTERNAL.
 *
 * grpc-js brings what the design wants from the transport: a read limit
 * (`grpc.max_receive_message_length`: RESOURCE_EXHAUSTED), HTTP/2 keep-alive pings from
 * the server, and a ping policy that tolerates the SDK's keep-alive pings.
 */
const service: ServiceDefinition = {
  HeartbeatStream: {
    path: `/${shardServiceName}/HeartbeatStream`,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    // A heartbeat ack comes already encoded (server/heartbeat-ack-codec.ts).
    responseSerialize: (m: CoordinatorMessage | Buffer) =>
      Buffer.isBuffer(m) ? m : asBuffer(toBinary(CoordinatorMessageSchema, m)),
    responseDeserialize: (b: Buffer) => fromBinary(CoordinatorMessageSchema, b),
  },
  GetShardInfo: {
    path: `/${shardServiceName}/GetShardInfo`,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: (m: GetShardInfoResponse) => asBuffer(toBinary(GetShardInfoResponseSchema, m)),
    responseDeserialize: (b: Buffer) => fromBinary(GetShardInfoResponseSchema, b),
  },
  FetchShardData: {
    path: `/${shardServiceName}/FetchShardData`,
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    // A record may come already encoded (sharding/data-record-codec.ts).
    responseSerialize: (m: DataRecord | Uint8Array) =>
      asBuffer(m instanceof Uint8Array ? m : toBinary(DataRecordSchema, m)),
    responseDeserialize: (b: Buffer) => fromBinary(DataRecordSchema, b),
  },
  FetchShardDataPages: {
    path: `/${shardServiceName}/FetchShardDataPages`,
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    // Pages come encoded (sharding/data-record-codec.ts).
    responseSerialize: (m: Uint8Array) => asBuffer(m),
    responseDeserialize: (b: Buffer) => fromBinary(DataPageSchema, b),
  },
  PutShardData: {
    path: `/${shardServiceName}/PutShardData`,
    requestStream: true,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: (m: PutShardDataResponse) => asBuffer(toBinary(PutShardDataResponseSchema, m)),
    responseDeserialize: (b: Buffer) => fromBinary(PutShardDataResponseSchema, b),
  },
};

/** Methods whose responses are gzipped when the client's request was (see gzip-responses.ts). */
const gzipPaths: ReadonlySet<string> = new Set([
  `/${shardServiceName}/FetchShardData`,
  `/${shardServiceName}/FetchShardDataPages`,
]);

function toStatus(e: unknown): { code: status; details: string; metadata: Metadata } {
  if (e instanceof StatusError)
    return { code: e.code, details: e.message, metadata: e.metadata ?? new Metadata() };
  return {
    code: status.INTERNAL,
    details: e instanceof Error ? e.message : String(e),
    metadata: new Metadata(),
  };
}

/** A started server; `close()` stops accepting, ends every call and waits (bounded). */
export interface ShardServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startShardServer(handlers: ShardHandlers, o: ShardServerOptions): Promise<ShardServer> {
  const auth = o.auth !== undefined && o.auth.mode !== "none" ? o.auth : undefined;
  /** Resolves with a function that forgets the revocation hook, or rejects with the refusal. */
  const admit = async (
    call: Parameters<Authorizer["check"]>[0],
    group: string,
    right: Right,
    nodeId: string | undefined,
    onRevoked: () => void,
  ): Promise<() => void> => {
    if (auth === undefined) return () => undefined;
    const identity = await auth.check(call, group, right, nodeId);
    return auth.onRevoked(identity, onRevoked);
  };
  const server = new Server({
    "grpc.max_receive_message_length": o.maxMessageBytes,
    // One connection may not hold more streams than this (the HTTP/2 peer is told in SETTINGS).
    "grpc.max_concurrent_streams": o.maxStreamsPerConnection,
    // Server-side HTTP/2 PINGs find dead TCP peers even when a worker stops heartbeating.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    // The SDK pings every 10 s; allow that without GOAWAY(too_many_pings).
    "grpc.http2.min_ping_interval_without_data_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    // Requests compressed with gzip are decompressed by grpc-js itself; responses of the data
    // methods are compressed by this interceptor, only for callers that ask.
    interceptors: [gzipResponses({ paths: gzipPaths })],
  });
  const controllers = new Set<AbortController>();
  /**
   * One server stream of a shard's records; `frame` turns a page into the messages to send
   * (one per record for FetchShardData, DataPages for FetchShardDataPages).
   */
  const serveFetch = (
    call: ServerWritableStream<Buffer, Uint8Array>,
    frame: (page: readonly DataRecordLike[]) => Uint8Array[],
  ) => {
    const ac = new AbortController();
    controllers.add(ac);
    call.on("cancelled", () => ac.abort());
    let req: FetchShardDataRequest;
    try {
      req = fromBinary(FetchShardDataRequestSchema, call.request);
    } catch (e) {
      controllers.delete(ac);
      call.emit("error", {
        code: status.INVALID_ARGUMENT,
        details: `undecodable FetchShardDataRequest: ${String(e)}`,
      });
      return;
    }
    const drained = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          ac.signal.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = () => {
          call.off("drain", onDrain);
          reject(new StatusError(status.CANCELLED, "cancelled"));
        };
        call.once("drain", onDrain);
        ac.signal.addEventListener("abort", onAbort, { once: true });
      });
    // HTTP/2 flow control sets the pace: when the client stops reading, write() returns
    // false and the next message waits for 'drain', so at most one message is held beyond
    // the stream's buffer. Synchronous (no promise) while the stream keeps up.
    const writePage = (page: readonly DataRecordLike[]): Promise<void> | undefined => {
      if (ac.signal.aborted) return Promise.reject(new StatusError(status.CANCELLED, "cancelled"));
      const messages = frame(page);
      for (let i = 0; i < messages.length; i++) {
        if (call.write(messages[i] as Uint8Array)) continue;
        if (i === messages.length - 1) return drained();
        return (async () => {
          await drained();
          for (let j = i + 1; j < messages.length; j++)
            if (!call.write(messages[j] as Uint8Array)) await drained();
        })();
      }
      return undefined;
    };
    let forget = (): void => undefined;
    admit(call, req.group, "worker", req.nodeId, () => {
      // The token was revoked: end the stream now, with the reason.
      if (ac.signal.aborted) return;
      call.emit("error", {
        code: status.UNAUTHENTICATED,
        details: "token revoked",
        metadata: new Metadata(),
      });
      ac.abort();
    })
      .then((f) => {
        forget = f;
        return handlers.fetchShardData(req, ac.signal, writePage);
      })
      .then(
        () => call.end(),
        (e: unknown) => {
          if (!ac.signal.aborted) call.emit("error", toStatus(e));
        },
      )
      .finally(() => {
        forget();
        controllers.delete(ac);
      });
  };
  server.addService(service, {
    HeartbeatStream: (call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>) =>
      handlers.heartbeatStream(call),
    GetShardInfo: (
      call: ServerUnaryCall<Buffer, GetShardInfoResponse>,
      callback: sendUnaryData<GetShardInfoResponse>,
    ) => {
      const ac = new AbortController();
      controllers.add(ac);
      call.on("cancelled", () => ac.abort());
      let req: GetShardInfoRequest;
      try {
        req = fromBinary(GetShardInfoRequestSchema, call.request);
      } catch (e) {
        controllers.delete(ac);
        callback({ code: status.INVALID_ARGUMENT, details: `undecodable GetShardInfoRequest: ${String(e)}` });
        return;
      }
      admit(call, req.group, "worker", req.nodeId, () => undefined)
        .then((forget) => {
          forget();
          return handlers.getShardInfo(req, ac.signal);
        })
        .then(
          (res) => callback(null, res),
          (e: unknown) => callback(toStatus(e)),
        )
        .finally(() => controllers.delete(ac));
    },
    FetchShardData: (call: ServerWritableStream<Buffer, Uint8Array>) =>
      serveFetch(call, (page) => page.map((r) => encodeDataRecord(r.id, r.payload))),
    FetchShardDataPages: (call: ServerWritableStream<Buffer, Uint8Array>) =>
      serveFetch(call, (page) => encodeDataPages(page, maxPageMessageBytes)),
    PutShardData: (
      call: ServerReadableStream<Buffer, PutShardDataResponse>,
      callback: sendUnaryData<PutShardDataResponse>,
    ) => {
      const ac = new AbortController();
      controllers.add(ac);
      call.on("cancelled", () => ac.abort());
      // Pulled: grpc-js asks the peer for the next message only as this iterator is consumed.
      const records = (async function* () {
        for await (const buf of call as AsyncIterable<Buffer>) {
          try {
            yield fromBinary(DataRecordSchema, buf);
          } catch (e) {
            throw new StatusError(status.INVALID_ARGUMENT, `undecodable DataRecord: ${String(e)}`);
          }
        }
      })();
      const group = call.metadata.get("x-shard-group")[0];
      admit(call, typeof group === "string" ? group : "", "data-write", undefined, () => undefined)
        .then((forget) => {
          forget();
          return handlers.putShardData(call.metadata, records, ac.signal);
        })
        .then(
          (res) => callback(null, res),
          (e: unknown) => {
            if (!ac.signal.aborted) callback(toStatus(e));
          },
        )
        .finally(() => controllers.delete(ac));
    },
  });
  o.register?.(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(o.listen, o.credentials ?? ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });
  o.log.info({ event: "grpc_listening", listen: o.listen, port, tls: o.credentials?._isSecure() === true });
  let closed: Promise<void> | undefined;
  return {
    port,
    close() {
      closed ??= (async () => {
        for (const ac of controllers) ac.abort();
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 500);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
      })();
      return closed;
    },
  };
}
