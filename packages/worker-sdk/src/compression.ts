import { compressionGzip } from "@connectrpc/connect-node";

/**
 * Compression of payload-heavy calls (FetchShardData, PutShardData). `gzip` compresses what
 * the client sends and, because the coordinator answers in the encoding the client used,
 * what FetchShardData streams back; messages under 1 KiB always go as they are. It pays
 * when payloads are text-like (JSON, logs: several times fewer bytes) and the network is
 * the bottleneck; it costs CPU on both ends and buys nothing on incompressible payloads
 * (see docs/data.md for the measured figures). Never used for heartbeats.
 */
export type DataCompression = "none" | "gzip";

/**
 * The connect-node transport options for `compression`.
 *
 * @example
 * ```ts
 * createGrpcTransport({ baseUrl, sessionManager, ...dataTransportCompression("gzip") });
 * ```
 */
export function dataTransportCompression(compression: DataCompression): {
  sendCompression?: typeof compressionGzip;
  acceptCompression: (typeof compressionGzip)[];
  compressMinBytes: number;
} {
  return {
    ...(compression === "gzip" ? { sendCompression: compressionGzip } : {}),
    acceptCompression: [compressionGzip],
    compressMinBytes: 1024,
  };
}
