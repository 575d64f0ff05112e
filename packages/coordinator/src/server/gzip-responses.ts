import { gzipSync } from "node:zlib";
import {
  type Metadata,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
} from "@grpc/grpc-js";

/** Options of {@link gzipResponses}. */
export interface GzipResponsesOptions {
  /** Full method paths whose responses may be compressed (`/shard.v1.ShardService/FetchShardData`). */
  readonly paths: ReadonlySet<string>;
  /**
   * Messages smaller than this go uncompressed (flag 0), as connect's `compressMinBytes`
   * does: gzip's 18 bytes of framing outweigh what it saves on small messages.
   * @default 1024
   */
  readonly minBytes?: number;
  /** zlib level, 1 (fast) to 9 (small). @default 6 (zlib's default) */
  readonly level?: number;
}

/** The internals of grpc-js's BaseServerInterceptingCall this interceptor relies on. */
interface BaseCallInternals {
  incomingEncoding?: unknown;
  serializeMessage?: unknown;
}

/**
 * A grpc-js server interceptor that gzips the responses of the given methods when the client
 * compressed its request with gzip: grpc-go's rule (the server answers in the encoding the
 * client used), so the client opts in per call (connect-node's `sendCompression`), and
 * streams that never ask (heartbeats) are never compressed.
 *
 * grpc-js decompresses requests but never compresses responses ("response compression is
 * currently not supported" in server-interceptors.js: the message flag is always 0). This
 * fills the gap for chosen methods by wrapping the base call's framing for that one call:
 * the response headers say `grpc-encoding: gzip`, and each message at least `minBytes` long
 * is gzipped with the compressed flag set (the gRPC spec lets each message choose). If a
 * grpc-js release renames those internals the interceptor leaves the call uncompressed
 * (the integration test that counts bytes on the wire then fails).
 *
 * @example
 * ```ts
 * new Server({ interceptors: [gzipResponses({ paths: new Set([`/${shardServiceName}/FetchShardData`]) })] });
 * ```
 */
export function gzipResponses(options: GzipResponsesOptions): ServerInterceptor {
  const minBytes = options.minBytes ?? 1024;
  const level = options.level ?? 6;
  return (method, call: ServerInterceptingCallInterface) => {
    const base = call as unknown as BaseCallInternals;
    const serialize = base.serializeMessage;
    if (
      !options.paths.has(method.path) ||
      base.incomingEncoding !== "gzip" ||
      typeof serialize !== "function"
    )
      return new ServerInterceptingCall(call);
    const plain = serialize as (this: unknown, value: unknown) => Buffer;
    base.serializeMessage = function (this: unknown, value: unknown): Buffer {
      const framed = plain.call(this, value);
      if (framed.length - 5 < minBytes) return framed;
      const body = gzipSync(framed.subarray(5), { level });
      const out = Buffer.allocUnsafe(body.length + 5);
      out.writeUInt8(1, 0);
      out.writeUInt32BE(body.length, 1);
      body.copy(out, 5);
      return out;
    };
    return new ServerInterceptingCall(call, {
      sendMetadata: (metadata: Metadata, next: (m: Metadata) => void) => {
        metadata.set("grpc-encoding", "gzip");
        next(metadata);
      },
    });
  };
}
