/**
 * Bare node:http2 server: the ceiling. It reads 5-byte length-prefixed frames on any
 * stream and answers each with one small precomputed frame, decoding nothing: whatever the
 * leader does beyond this is the price of gRPC framing, protobuf and our own logic.
 * Prints {"t":"listening","port"}.
 */
import { constants, createServer } from "node:http2";
import { AssignmentPhase } from "@org/proto";
import { encodeCoordinator, FrameReader, frame } from "./wire.js";

// A real, precomputed HeartbeatAck, so that the load generator decodes the same thing it
// decodes from the other targets (its own cost must not differ between targets).
const reply = frame(
  encodeCoordinator({
    seq: 1n,
    kind: {
      case: "heartbeatAck",
      value: {
        nodeId: "node-000000",
        ts: 1n,
        accepted: true,
        shardId: -1,
        phase: AssignmentPhase.ACTIVE,
        active: true,
      },
    },
  }),
);

const server = createServer({ settings: { maxConcurrentStreams: 100_000 } });
server.on("stream", (stream) => {
  stream.respond({
    [constants.HTTP2_HEADER_STATUS]: 200,
    [constants.HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
  });
  const reader = new FrameReader();
  stream.on("data", (chunk: Buffer) => reader.push(chunk, () => stream.write(reply)));
  stream.on("end", () => stream.end());
  stream.on("error", () => undefined);
});
server.on("sessionError", () => undefined);
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  process.stdout.write(`${JSON.stringify({ t: "listening", port })}\n`);
});
