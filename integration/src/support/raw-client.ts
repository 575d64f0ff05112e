import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  Client,
  type ClientDuplexStream,
  credentials,
  Metadata,
  type ServiceError,
  type status,
} from "@grpc/grpc-js";
import {
  type CoordinatorMessage,
  CoordinatorMessageSchema,
  type DataRecord,
  DataRecordSchema,
  FetchShardDataRequestSchema,
  GetShardInfoRequestSchema,
  type GetShardInfoResponse,
  GetShardInfoResponseSchema,
  shardServiceName,
  WorkerMessageSchema,
} from "@org/proto";
import { ArrivalWaiter } from "./arrival-waiter.js";

/** How a stream or call ended. */
export interface Ended {
  readonly code: status;
  readonly details: string;
  readonly metadata: Metadata;
}

/**
 * A bare grpc-js client of ShardService (protobuf-es serializers), for protocol-level tests:
 * it sends exactly what the test says, including what the SDK never would.
 */
export class RawStream {
  readonly received: CoordinatorMessage[] = [];
  readonly ended: Promise<Ended>;
  readonly #call: ClientDuplexStream<Uint8Array, CoordinatorMessage>;
  readonly #client: Client;
  #seq = 0n;
  readonly #waiter = new ArrivalWaiter<CoordinatorMessage>(this.received);

  /** `headers` are sent as the call's metadata (e.g. `authorization`). */
  constructor(address: string, headers: Readonly<Record<string, string>> = {}) {
    this.#client = new Client(address, credentials.createInsecure());
    const md = new Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    this.#call = this.#client.makeBidiStreamRequest(
      `/${shardServiceName}/HeartbeatStream`,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(CoordinatorMessageSchema, b),
      md,
    );
    this.#call.on("data", (m: CoordinatorMessage) => {
      this.received.push(m);
      this.#waiter.arrived();
    });
    this.ended = new Promise((resolve) => {
      this.#call.on("status", (s: { code: status; details: string; metadata: Metadata }) =>
        resolve({ code: s.code, details: s.details, metadata: s.metadata }),
      );
      this.#call.on("error", (e: ServiceError) =>
        resolve({ code: e.code, details: e.details, metadata: e.metadata ?? new Metadata() }),
      );
    });
  }

  /** Sends a WorkerMessage (seq filled in unless given). */
  send(msg: MessageInitShape<typeof WorkerMessageSchema>): void {
    this.#seq += 1n;
    this.sendBytes(toBinary(WorkerMessageSchema, create(WorkerMessageSchema, { seq: this.#seq, ...msg })));
  }

  sendBytes(b: Uint8Array): void {
    this.#call.write(b);
  }

  hello(group: string, nodeId: string, extra: Record<string, unknown> = {}): void {
    this.send({ kind: { case: "hello", value: { group, nodeId, ...extra } } });
  }

  heartbeat(nodeId: string): void {
    this.send({ kind: { case: "heartbeat", value: { nodeId, ts: BigInt(Date.now()) } } });
  }

  /** Waits until a received message matches. */
  waitFor(pred: (m: CoordinatorMessage) => boolean, timeoutMs = 10_000): Promise<CoordinatorMessage> {
    return this.#waiter.waitFor(
      pred,
      timeoutMs,
      0,
      () => `got ${this.received.map((r) => r.kind.case).join(",")}`,
    );
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

/** Unary GetShardInfo against one replica. */
export function getShardInfo(address: string, group: string, nodeId: string): Promise<GetShardInfoResponse> {
  const client = new Client(address, credentials.createInsecure());
  return new Promise<GetShardInfoResponse>((resolve, reject) => {
    client.makeUnaryRequest(
      `/${shardServiceName}/GetShardInfo`,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(GetShardInfoResponseSchema, b),
      toBinary(GetShardInfoRequestSchema, create(GetShardInfoRequestSchema, { group, nodeId })),
      (err, res) => (err ? reject(err) : res ? resolve(res) : reject(new Error("empty response"))),
    );
  }).finally(() => client.close());
}

/** Server-streaming FetchShardData; resolves with the records, or rejects with the ServiceError. */
export function fetchShardData(
  address: string,
  req: MessageInitShape<typeof FetchShardDataRequestSchema>,
): Promise<DataRecord[]> {
  const client = new Client(address, credentials.createInsecure());
  return new Promise<DataRecord[]>((resolve, reject) => {
    const out: DataRecord[] = [];
    const call = client.makeServerStreamRequest(
      `/${shardServiceName}/FetchShardData`,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => fromBinary(DataRecordSchema, b),
      toBinary(FetchShardDataRequestSchema, create(FetchShardDataRequestSchema, req)),
    );
    call.on("data", (r: DataRecord) => out.push(r));
    call.on("error", reject);
    call.on("end", () => resolve(out));
  }).finally(() => client.close());
}
