import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AssignmentPhase, CoordinatorMessageSchema } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeHeartbeatAckMessage, type HeartbeatAckFields } from "./heartbeat-ack-codec.js";

const protobufEs = (seq: bigint, ackSeq: bigint, a: HeartbeatAckFields) =>
  toBinary(
    CoordinatorMessageSchema,
    create(CoordinatorMessageSchema, {
      seq,
      ackSeq,
      kind: { case: "heartbeatAck", value: { ...a, shards: [...a.shards] } },
    }),
  );

// Mostly values the leader really sends (below 2^53), some beyond (left to protobuf-es).
const u64 = fc.oneof(
  { arbitrary: fc.bigInt({ min: 0n, max: 300n }), weight: 4 },
  { arbitrary: fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }), weight: 4 },
  { arbitrary: fc.constantFrom(0n, 127n, 128n, 16_383n, 16_384n, 2n ** 53n - 1n), weight: 2 },
  { arbitrary: fc.bigInt({ min: 2n ** 53n, max: (1n << 64n) - 1n }), weight: 1 },
);
const i64 = fc.oneof(
  { arbitrary: fc.bigInt({ min: 0n, max: 2n ** 53n - 1n }), weight: 8 },
  { arbitrary: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), weight: 1 },
);
const u32 = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }));
const ack: fc.Arbitrary<HeartbeatAckFields> = fc.record({
  nodeId: fc.string({ unit: "grapheme", maxLength: 200 }),
  ts: i64,
  accepted: fc.boolean(),
  totalShards: u32,
  shardId: fc.oneof(fc.constantFrom(-1, 0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
  shards: fc.array(u32, { maxLength: 300 }),
  shardVersion: u64,
  phase: fc.constantFrom(AssignmentPhase.UNSPECIFIED, AssignmentPhase.PENDING, AssignmentPhase.ACTIVE),
  active: fc.boolean(),
  leaderEpoch: u64,
  heartbeatSeq: u64,
  sessionTimeoutMs: u32,
  heartbeatIntervalMs: u32,
});

describe("encodeHeartbeatAckMessage", () => {
  it("gives exactly the bytes protobuf-es gives, and decodes to the same message", () => {
    fc.assert(
      fc.property(u64, u64, ack, (seq, ackSeq, a) => {
        const mine = encodeHeartbeatAckMessage(seq, ackSeq, a);
        // 64-bit values outside [0, 2^53) are left to protobuf-es; every other ack is encoded.
        const safe = [seq, ackSeq, a.ts, a.shardVersion, a.leaderEpoch, a.heartbeatSeq].every(
          (v) => v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER),
        );
        expect(mine !== undefined).toBe(safe);
        if (mine === undefined) return;
        expect(mine.equals(Buffer.from(protobufEs(seq, ackSeq, a)))).toBe(true);
        const back = fromBinary(CoordinatorMessageSchema, mine);
        expect(back.seq).toBe(seq);
        expect(back.kind.case).toBe("heartbeatAck");
        if (back.kind.case === "heartbeatAck") {
          expect(back.kind.value.shards).toEqual(a.shards);
          expect(back.kind.value.shardId).toBe(a.shardId);
          expect(back.kind.value.ts).toBe(a.ts);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("encodes a typical ack (one shard, active) and an empty one", () => {
    const typical: HeartbeatAckFields = {
      nodeId: "node-4711",
      ts: 1_795_596_189_261n,
      accepted: true,
      totalShards: 256,
      shardId: 17,
      shards: [17],
      shardVersion: 3n,
      phase: AssignmentPhase.ACTIVE,
      active: true,
      leaderEpoch: 1234n,
      heartbeatSeq: 99n,
      sessionTimeoutMs: 10_000,
      heartbeatIntervalMs: 1000,
    };
    expect(encodeHeartbeatAckMessage(5n, 4n, typical)?.equals(Buffer.from(protobufEs(5n, 4n, typical)))).toBe(
      true,
    );
    // A member with no shard (shard id -1, ten bytes on the wire) is the other common ack.
    const none = { ...typical, shardId: -1, shards: [] };
    expect(encodeHeartbeatAckMessage(5n, 4n, none)?.equals(Buffer.from(protobufEs(5n, 4n, none)))).toBe(true);
    const empty: HeartbeatAckFields = {
      ...typical,
      nodeId: "",
      ts: 0n,
      accepted: false,
      totalShards: 0,
      shardId: 0,
      shards: [],
      shardVersion: 0n,
      phase: AssignmentPhase.UNSPECIFIED,
      active: false,
      leaderEpoch: 0n,
      heartbeatSeq: 0n,
      sessionTimeoutMs: 0,
      heartbeatIntervalMs: 0,
    };
    // Everything at its default: only the (empty) heartbeat_ack field itself is written.
    expect([...(encodeHeartbeatAckMessage(0n, 0n, empty) ?? [])]).toEqual([...protobufEs(0n, 0n, empty)]);
    expect([...protobufEs(0n, 0n, empty)]).toEqual([90, 0]);
  });
});
