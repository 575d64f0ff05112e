/**
 * Bare @grpc/grpc-js server for comparison: the same ShardService.HeartbeatStream path and
 * the same protobuf-es (de)serialization as the leader, but no membership logic: a Hello
 * gets a Welcome, each Heartbeat gets a HeartbeatAck. Prints {"t":"listening","port"}.
 */
import { Server, ServerCredentials, type ServerDuplexStream, type ServiceDefinition } from "@grpc/grpc-js";
import { AssignmentPhase } from "@org/proto";
import { decodeWorker, encodeCoordinator, heartbeatStreamPath } from "./wire.js";

const identity = (b: Buffer) => b;
const service: ServiceDefinition = {
  HeartbeatStream: {
    path: heartbeatStreamPath,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

const server = new Server({
  // Same transport options as the leader's server (packages/coordinator/src/server/shard-server.ts).
  "grpc.max_receive_message_length": 65_536,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.http2.min_ping_interval_without_data_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
});
server.addService(service, {
  HeartbeatStream: (call: ServerDuplexStream<Buffer, Buffer>) => {
    let seq = 0n;
    let peerSeq = 0n;
    call.on("data", (chunk: Buffer) => {
      const msg = decodeWorker(chunk);
      if (msg.seq > peerSeq) peerSeq = msg.seq;
      seq += 1n;
      if (msg.kind.case === "hello") {
        call.write(
          encodeCoordinator({
            seq,
            ackSeq: peerSeq,
            kind: { case: "welcome", value: { sessionToken: "bare", heartbeatIntervalMs: 1000 } },
          }),
        );
      } else if (msg.kind.case === "heartbeat") {
        call.write(
          encodeCoordinator({
            seq,
            ackSeq: peerSeq,
            kind: {
              case: "heartbeatAck",
              value: {
                nodeId: msg.kind.value.nodeId,
                ts: msg.kind.value.ts,
                accepted: true,
                shardId: -1,
                phase: AssignmentPhase.ACTIVE,
                active: true,
                heartbeatSeq: msg.seq,
              },
            },
          }),
        );
      }
    });
    call.on("end", () => call.end());
    call.on("error", () => undefined);
  },
});
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`${JSON.stringify({ t: "listening", port })}\n`);
});
