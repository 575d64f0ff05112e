import { type ClientHttp2Session, connect, constants } from "node:http2";
import { Client, type ClientDuplexStream, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import type { CoordinatorMessage } from "@org/proto";
import { decodeCoordinator, FrameReader, frame, heartbeatStreamPath } from "./wire.js";

/** How a stream ended: gRPC status code (or -1 for a transport error) and the leader hint. */
export interface StreamEnd {
  readonly code: number;
  readonly details: string;
  readonly leader: string;
}

/** One bidirectional HeartbeatStream, whatever carries it. */
export interface BenchStream {
  write(payload: Buffer): void;
  cancel(): void;
}

export interface StreamHandlers {
  onMessage(m: CoordinatorMessage): void;
  onEnd(e: StreamEnd): void;
}

/** A channel: many streams over one HTTP/2 connection (like one worker process would have). */
export interface BenchChannel {
  open(h: StreamHandlers): BenchStream;
  close(): void;
}

const identity = (b: Buffer) => b;

/** `tlsCa`: TLS to the target, verified against this CA (the TLS cost bench). */
export function grpcChannel(address: string, tlsCa?: Buffer): BenchChannel {
  // A local subchannel pool gives each channel its own TCP connection; with grpc-js's
  // default global pool every Client to the same address would share one.
  const creds = tlsCa === undefined ? credentials.createInsecure() : credentials.createSsl(tlsCa);
  const client = new Client(address, creds, { "grpc.use_local_subchannel_pool": 1 });
  return {
    open(h) {
      const call: ClientDuplexStream<Buffer, CoordinatorMessage> = client.makeBidiStreamRequest(
        heartbeatStreamPath,
        identity,
        (b: Buffer) => decodeCoordinator(b),
        new Metadata(),
      );
      let ended = false;
      call.on("data", (m: CoordinatorMessage) => h.onMessage(m));
      call.on("error", (_e: ServiceError) => undefined); // the status event reports it
      call.on("status", (s: { code: number; details: string; metadata: Metadata }) => {
        ended = true;
        h.onEnd({
          code: s.code,
          details: s.details,
          leader: String(s.metadata.get("x-shard-leader")[0] ?? ""),
        });
      });
      return {
        write(p) {
          if (!ended) call.write(p);
        },
        cancel() {
          ended = true;
          call.cancel();
        },
      };
    },
    close() {
      client.close();
    },
  };
}

export function http2Channel(address: string): BenchChannel {
  let session: ClientHttp2Session | undefined;
  const get = () => {
    if (session === undefined || session.destroyed || session.closed) {
      session = connect(`http://${address}`);
      session.on("error", () => undefined);
    }
    return session;
  };
  return {
    open(h) {
      const req = get().request(
        {
          [constants.HTTP2_HEADER_METHOD]: "POST",
          [constants.HTTP2_HEADER_PATH]: heartbeatStreamPath,
          [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
          te: "trailers",
        },
        { endStream: false },
      );
      const reader = new FrameReader();
      let ended = false;
      const end = (code: number, details: string) => {
        if (ended) return;
        ended = true;
        h.onEnd({ code, details, leader: "" });
      };
      req.on("data", (chunk: Buffer) => reader.push(chunk, (p) => h.onMessage(decodeCoordinator(p))));
      req.on("error", (e: Error) => end(-1, e.message));
      req.on("close", () => end(0, "closed"));
      return {
        write(p) {
          if (!ended) req.write(frame(p));
        },
        cancel() {
          ended = true;
          req.close();
        },
      };
    },
    close() {
      session?.close();
    },
  };
}
