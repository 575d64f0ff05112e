import { constants as http2 } from "node:http2";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Metadata, type ServerDuplexStream, status } from "@grpc/grpc-js";
import {
  type CommandAck,
  type CoordinatorMessage,
  CoordinatorMessageSchema,
  type Heartbeat,
  type Hello,
  type Leave,
  type Release,
  type TaskUpdate,
  type WorkerMessage,
  WorkerMessageSchema,
} from "@org/proto";
import type { Logger } from "pino";
import { encodeHeartbeatAckMessage, type HeartbeatAckFields } from "./heartbeat-ack-codec.js";
import { checkLabels, checkName } from "./names.js";
import { TokenBucket } from "./rate-limiter.js";
import { isRefusal, type RefusalLog } from "./refusal-log.js";

/** A gRPC status to end a stream with. */
export interface StreamStatus {
  readonly code: status;
  readonly details: string;
  readonly metadata?: Metadata;
}

/** What a session asks of the leader; implemented by `Leader`. */
export interface SessionHost {
  /** Admits the worker, or returns the status to refuse it with. */
  hello(session: WorkerSession, hello: Hello): Promise<StreamStatus | undefined>;
  heartbeat(session: WorkerSession, hb: Heartbeat, seq: bigint): void;
  release(session: WorkerSession, release: Release): void;
  leave(session: WorkerSession, leave: Leave): void;
  /** Progress or the outcome of a dispatched task. */
  taskUpdate(session: WorkerSession, update: TaskUpdate): void;
  /** The outcome of a control command. */
  commandAck(session: WorkerSession, ack: CommandAck): void;
  /** The stream ended without Leave (the member stays until its session timeout). */
  detached(session: WorkerSession): void;
}

export interface SessionLimits {
  /** Outbound messages queued for a slow reader before it is disconnected. */
  readonly maxQueued: number;
  /** A stream that has not sent Hello this long after it opened is closed, in ms. */
  readonly helloTimeoutMs: number;
  /** Heartbeats a worker may send in a burst, and per second sustained. */
  readonly heartbeatBurst: number;
  readonly heartbeatsPerSecond: number;
}

export type CoordinatorMessageKind = MessageInitShape<typeof CoordinatorMessageSchema>["kind"];

/**
 * One worker's HeartbeatStream on the leader: decodes and validates what arrives, numbers
 * what leaves, bounds the outbound queue, and turns protocol errors into precise statuses.
 * Membership decisions belong to the host; this class only speaks the protocol.
 */
export class WorkerSession {
  readonly #call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>;
  readonly #host: SessionHost;
  readonly #log: Logger;
  readonly #limits: SessionLimits;
  readonly #bucket: TokenBucket;
  #seq = 0n;
  #peerSeq = 0n;
  readonly #refusals: RefusalLog | undefined;
  readonly #onRefused: ((code: string) => void) | undefined;
  #state: "new" | "opening" | "open" | "closed" = "new";
  #helloTimer: NodeJS.Timeout | undefined;
  readonly #onEnd: (() => void) | undefined;
  group = "";
  nodeId = "";

  constructor(
    call: ServerDuplexStream<Buffer, CoordinatorMessage | Buffer>,
    host: SessionHost,
    log: Logger,
    limits: SessionLimits,
    hooks: {
      refusals?: RefusalLog;
      /** A stream ended before it was welcomed, with this status (its name): a refusal. */
      onRefused?: (code: string) => void;
      onEnd?: () => void;
    } = {},
  ) {
    this.#call = call;
    this.#host = host;
    this.#log = log;
    this.#limits = limits;
    this.#refusals = hooks.refusals;
    this.#onRefused = hooks.onRefused;
    this.#onEnd = hooks.onEnd;
    this.#bucket = new TokenBucket(limits.heartbeatBurst, limits.heartbeatsPerSecond, performance.now());
  }

  /** Starts reading; the session ends itself on a protocol error or when the peer goes. */
  start(): void {
    // A stream that never says Hello would otherwise hold its slot forever.
    this.#helloTimer = setTimeout(
      () =>
        this.#fail(
          status.DEADLINE_EXCEEDED,
          `no hello within ${this.#limits.helloTimeoutMs} ms of opening the stream`,
        ),
      this.#limits.helloTimeoutMs,
    );
    this.#helloTimer.unref();
    this.#call.on("data", (chunk: Buffer) => this.#onData(chunk));
    this.#call.on("end", () => this.#ended("client half-closed"));
    this.#call.on("cancelled", () => this.#ended("cancelled"));
    this.#call.on("error", (err: Error) => this.#ended(`stream error: ${err.message}`));
    this.#call.on("close", () => this.#ended("closed"));
  }

  get open(): boolean {
    return this.#state === "open";
  }

  /** True once the stream has ended (false while its Hello is being decided). */
  get closed(): boolean {
    return this.#state === "closed";
  }

  get peer(): string {
    return this.#call.getPeer();
  }

  /** Queues a message; a reader that lets `maxQueued` pile up is disconnected. */
  send(kind: CoordinatorMessageKind): void {
    if (this.#writable()) this.#write(kind);
  }

  #write(kind: CoordinatorMessageKind): void {
    this.#seq += 1n;
    this.#call.write(create(CoordinatorMessageSchema, { seq: this.#seq, ackSeq: this.#peerSeq, kind }));
  }

  /**
   * Queues a heartbeat ack, encoded by hand (see `encodeHeartbeatAckMessage`): the same bytes
   * `send({ case: "heartbeatAck", value: ack })` would write, with a fraction of the garbage.
   */
  sendHeartbeatAck(ack: HeartbeatAckFields): void {
    if (!this.#writable()) return;
    const bytes = encodeHeartbeatAckMessage(this.#seq + 1n, this.#peerSeq, ack);
    if (bytes === undefined) {
      this.#write({ case: "heartbeatAck", value: { ...ack, shards: [...ack.shards] } });
      return;
    }
    this.#seq += 1n;
    this.#call.write(bytes);
  }

  /** Whether a message may be queued; a reader that lets `maxQueued` pile up is disconnected. */
  #writable(): boolean {
    if (this.#state === "closed") return false;
    if (this.#call.writableLength >= this.#limits.maxQueued) {
      this.close({
        code: status.RESOURCE_EXHAUSTED,
        details: "outbound queue overflow: the worker does not read its stream",
      });
      // The status sits behind the queue the peer does not read: reset the stream now.
      this.#reset();
      return false;
    }
    return true;
  }

  /** Ends the stream with `st` (OK ends it cleanly). Safe to call more than once. */
  close(st: StreamStatus): void {
    if (this.#state === "closed") return;
    const wasOpen = this.#state === "open";
    this.#finish();
    const entry = {
      event: "stream_closed",
      group: this.group || undefined,
      node: this.nodeId || undefined,
      peer: this.#peerOrEmpty(),
      code: status[st.code],
      details: st.details,
    };
    if (!wasOpen && st.code !== status.OK) this.#onRefused?.(status[st.code]);
    // A client that retries a refusal in a loop must not flood the log at info level.
    if (this.#refusals === undefined || !isRefusal(st.code)) this.#log.info(entry);
    else this.#refusals.refused(entry, performance.now());
    try {
      if (st.code === status.OK) this.#call.end(st.metadata ?? new Metadata());
      else
        this.#call.emit("error", {
          code: st.code,
          details: st.details,
          metadata: st.metadata ?? new Metadata(),
        });
    } catch {
      // the transport is already gone
    }
    // A peer that does not read never receives the trailers; do not let it hold the stream.
    const guard = setTimeout(() => this.#reset(), 2000);
    guard.unref();
    this.#call.once("close", () => clearTimeout(guard));
    if (wasOpen) this.#host.detached(this);
  }

  /**
   * Resets the HTTP/2 stream (RST_STREAM CANCEL). grpc-js has no public way to abort a
   * server call whose peer stopped reading; its internal call object (grpc-js 1.14, pinned)
   * holds the Node HTTP/2 stream as `call.stream`.
   */
  #reset(): void {
    // grpc-js keeps the HTTP/2 stream on its base call; server interceptors (gzip-responses)
    // wrap that call in ServerInterceptingCalls linked by `nextCall`, so walk down to it.
    type Inner = { stream?: { closed?: boolean; close?: (code: number) => void }; nextCall?: Inner };
    let inner = (this.#call as unknown as { call?: Inner }).call;
    for (let depth = 0; inner !== undefined && inner.stream === undefined && depth < 8; depth++)
      inner = inner.nextCall;
    const stream = inner?.stream;
    if (stream !== undefined && stream.closed !== true && typeof stream.close === "function")
      stream.close(http2.NGHTTP2_CANCEL);
  }

  #finish(): void {
    this.#state = "closed";
    clearTimeout(this.#helloTimer);
    this.#onEnd?.();
  }

  #peerOrEmpty(): string {
    try {
      return this.#call.getPeer();
    } catch {
      return "";
    }
  }

  #ended(why: string): void {
    if (this.#state === "closed") return;
    const wasOpen = this.#state === "open";
    this.#finish();
    this.#log.info({
      event: "stream_ended",
      group: this.group || undefined,
      node: this.nodeId || undefined,
      why,
    });
    try {
      this.#call.end();
    } catch {
      // already ended
    }
    if (wasOpen) this.#host.detached(this);
  }

  #fail(code: status, details: string): void {
    this.close({ code, details });
  }

  #onData(chunk: Buffer): void {
    if (this.#state === "closed") return;
    let msg: WorkerMessage;
    try {
      msg = fromBinary(WorkerMessageSchema, chunk);
    } catch (e) {
      this.#fail(
        status.INVALID_ARGUMENT,
        `undecodable WorkerMessage: ${e instanceof Error ? e.message : String(e)}`,
      );
      return;
    }
    if (msg.seq > this.#peerSeq) this.#peerSeq = msg.seq;
    const kind = msg.kind;
    if (this.#state === "new") {
      if (kind.case !== "hello") {
        this.#fail(
          status.INVALID_ARGUMENT,
          `the first message must be hello, got ${kind.case ?? "an empty message"}`,
        );
        return;
      }
      const bad =
        checkName("group", kind.value.group) ??
        checkName("node_id", kind.value.nodeId) ??
        checkLabels(kind.value.labels);
      if (bad !== undefined) {
        this.#fail(status.INVALID_ARGUMENT, bad);
        return;
      }
      this.group = kind.value.group;
      this.nodeId = kind.value.nodeId;
      clearTimeout(this.#helloTimer);
      this.#state = "opening";
      this.#call.pause(); // nothing else is read until the hello is decided
      this.#host.hello(this, kind.value).then(
        (refusal) => {
          if (this.#state !== "opening") {
            // The stream ended while the hello was being decided: if the host admitted it,
            // it must forget this session now (nothing else will tell it).
            if (refusal === undefined) this.#host.detached(this);
            return;
          }
          if (refusal !== undefined) {
            this.close(refusal);
            return;
          }
          this.#state = "open";
          this.#call.resume();
        },
        (err: unknown) => {
          this.#log.error({ event: "hello_failed", group: this.group, node: this.nodeId, err: String(err) });
          if (this.#state === "opening")
            this.#fail(status.UNAVAILABLE, "the coordinator could not admit the worker; retry");
        },
      );
      return;
    }
    if (this.#state !== "open") return;
    switch (kind.case) {
      case "heartbeat":
        if (!this.#bucket.take(performance.now())) {
          this.#fail(
            status.RESOURCE_EXHAUSTED,
            `heartbeats faster than ${this.#limits.heartbeatsPerSecond}/s`,
          );
          return;
        }
        if (kind.value.nodeId !== "" && kind.value.nodeId !== this.nodeId) {
          this.#fail(
            status.INVALID_ARGUMENT,
            `heartbeat node_id ${JSON.stringify(kind.value.nodeId)} does not match hello`,
          );
          return;
        }
        this.#host.heartbeat(this, kind.value, msg.seq);
        return;
      case "release":
        this.#host.release(this, kind.value);
        return;
      case "leave":
        this.#host.leave(this, kind.value);
        return;
      case "taskUpdate":
        if (kind.value.taskId === "") {
          this.#fail(status.INVALID_ARGUMENT, "task_update without a task_id");
          return;
        }
        this.#host.taskUpdate(this, kind.value);
        return;
      case "commandAck":
        this.#host.commandAck(this, kind.value);
        return;
      case "hello":
        this.#fail(status.INVALID_ARGUMENT, "hello may only be the first message");
        return;
      default:
        this.#fail(status.INVALID_ARGUMENT, "empty WorkerMessage (no kind set)");
    }
  }
}
