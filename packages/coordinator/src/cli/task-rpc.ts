import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Client, credentials, type Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { taskServiceName } from "@org/proto";

/** Statuses worth another try at another replica (or the same one after a pause). */
const retryable = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.ABORTED]);

function leaderOf(metadata: Metadata | undefined): string | undefined {
  const v = metadata?.get("x-shard-leader")[0];
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** A gRPC failure as the CLI reports it: the status name and the server's details. */
export class TaskRpcError extends Error {
  override name = "TaskRpcError";
  readonly code: number;

  constructor(code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** The status name (e.g. NOT_FOUND). */
  get statusName(): string {
    return status[this.code] ?? String(this.code);
  }
}

/**
 * The CLI's TaskService client (grpc-js, as the rest of the coordinator): each call goes to
 * the leader, following the `x-shard-leader` a follower names, and is retried on the next
 * replica while no leader answers (an election in progress), for at most `timeoutMs`.
 *
 * @example
 * ```ts
 * const rpc = new TaskRpc(["127.0.0.1:50051", "127.0.0.1:50052"]);
 * const res = await rpc.unary("GetTask", GetTaskRequestSchema, GetTaskResponseSchema, { group: "g", taskId: "a" });
 * rpc.close();
 * ```
 */
export class TaskRpc {
  readonly #addresses: string[];
  readonly #clients = new Map<string, Client>();
  readonly #timeoutMs: number;
  #next = 0;

  constructor(addresses: readonly string[], timeoutMs = 15_000) {
    if (addresses.length === 0)
      throw new TaskRpcError(
        status.UNAVAILABLE,
        "no coordinator replica is running (none in the election keys)",
      );
    this.#addresses = [...addresses];
    this.#timeoutMs = timeoutMs;
  }

  #client(address: string): Client {
    let c = this.#clients.get(address);
    if (c === undefined) {
      c = new Client(address, credentials.createInsecure());
      this.#clients.set(address, c);
    }
    return c;
  }

  /** Where the next call goes: the leader last named, else the next replica in turn. */
  #target(leader: string | undefined): string {
    if (leader !== undefined) return leader;
    const a = this.#addresses[this.#next % this.#addresses.length] ?? "";
    this.#next += 1;
    return a;
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: string,
    input: I,
    output: O,
    request: MessageInitShape<I>,
  ): Promise<MessageShape<O>> {
    const bytes = Buffer.from(toBinary(input, create(input, request)));
    const deadline = performance.now() + this.#timeoutMs;
    let leader: string | undefined;
    for (;;) {
      const target = this.#target(leader);
      try {
        return await new Promise<MessageShape<O>>((resolve, reject) => {
          this.#client(target).makeUnaryRequest(
            `/${taskServiceName}/${method}`,
            (b: Buffer) => b,
            (b: Buffer) => fromBinary(output, b),
            bytes,
            { deadline: Date.now() + 5000 },
            (e: ServiceError | null, res?: MessageShape<O>) =>
              e !== null || res === undefined ? reject(e) : resolve(res),
          );
        });
      } catch (e) {
        const se = e as Partial<ServiceError>;
        const code = se.code ?? status.UNKNOWN;
        if (!retryable.has(code) || performance.now() > deadline)
          throw new TaskRpcError(code, se.details ?? String(e), { cause: e });
        leader = leaderOf(se.metadata);
        if (leader === target) leader = undefined;
        await new Promise((r) => setTimeout(r, leader === undefined ? 200 : 0));
      }
    }
  }

  /**
   * A server stream from the leader; on a transient failure it reopens with `resume(request)`
   * (e.g. a watch from its last cursor), until `signal` aborts.
   */
  async *stream<I extends DescMessage, O extends DescMessage>(
    method: string,
    input: I,
    output: O,
    request: () => MessageInitShape<I>,
    signal: AbortSignal,
  ): AsyncGenerator<MessageShape<O>> {
    let leader: string | undefined;
    while (!signal.aborted) {
      const target = this.#target(leader);
      const call = this.#client(target).makeServerStreamRequest(
        `/${taskServiceName}/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => fromBinary(output, b),
        Buffer.from(toBinary(input, create(input, request()))),
      );
      const onAbort = () => call.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const m of call as AsyncIterable<MessageShape<O>>) yield m;
        return;
      } catch (e) {
        if (signal.aborted) return;
        const se = e as Partial<ServiceError>;
        const code = se.code ?? status.UNKNOWN;
        if (!retryable.has(code)) throw new TaskRpcError(code, se.details ?? String(e), { cause: e });
        leader = leaderOf(se.metadata);
        if (leader === target) leader = undefined;
        await new Promise((r) => setTimeout(r, leader === undefined ? 200 : 0));
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    }
  }

  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}
