import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type CoordinatorMessage,
  CoordinatorMessageSchema,
  shardServiceName,
  type WorkerMessage,
  WorkerMessageSchema,
} from "@org/proto";

/** The one RPC every target serves (the bare HTTP/2 server accepts the same path). */
export const heartbeatStreamPath = `/${shardServiceName}/HeartbeatStream`;

export const encodeWorker = (m: MessageInitShape<typeof WorkerMessageSchema>): Buffer =>
  Buffer.from(toBinary(WorkerMessageSchema, create(WorkerMessageSchema, m)));
export const decodeWorker = (b: Uint8Array): WorkerMessage => fromBinary(WorkerMessageSchema, b);
export const encodeCoordinator = (m: MessageInitShape<typeof CoordinatorMessageSchema>): Buffer =>
  Buffer.from(toBinary(CoordinatorMessageSchema, create(CoordinatorMessageSchema, m)));
export const decodeCoordinator = (b: Uint8Array): CoordinatorMessage =>
  fromBinary(CoordinatorMessageSchema, b);

/** gRPC's length-prefixed message: 1 byte "compressed" flag, 4 bytes big-endian length. */
export function frame(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = 0;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, 5);
  return out;
}

/** Splits a byte stream into length-prefixed frames; keeps a partial frame for the next chunk. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer, onFrame: (payload: Buffer) => void): void {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    let off = 0;
    while (this.#buf.length - off >= 5) {
      const len = this.#buf.readUInt32BE(off + 1);
      if (this.#buf.length - off - 5 < len) break;
      onFrame(this.#buf.subarray(off + 5, off + 5 + len));
      off += 5 + len;
    }
    this.#buf = off === this.#buf.length ? Buffer.alloc(0) : this.#buf.subarray(off);
  }
}
