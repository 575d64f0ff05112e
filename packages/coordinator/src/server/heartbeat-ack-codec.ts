import type { AssignmentPhase } from "@org/proto";

/** The fields of a `HeartbeatAck` the leader sends (`message` and `recorded_finals` empty). */
export interface HeartbeatAckFields {
  readonly nodeId: string;
  readonly ts: bigint;
  readonly accepted: boolean;
  readonly totalShards: number;
  readonly shardId: number;
  readonly shards: readonly number[];
  readonly shardVersion: bigint;
  readonly phase: AssignmentPhase;
  readonly active: boolean;
  readonly leaderEpoch: bigint;
  readonly heartbeatSeq: bigint;
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
}

// Field numbers of shard.proto (CoordinatorMessage and HeartbeatAck); the codec test decodes
// what this writes with the generated schema, so a renumbered field fails it.
const MSG_SEQ = 1;
const MSG_ACK_SEQ = 2;
const MSG_HEARTBEAT_ACK = 11;
const VARINT = 0;
const LEN = 2;
const tag = (field: number, wire: number) => field * 8 + wire;
const U64 = (1n << 64n) - 1n;

/** Bytes of `n` (0 <= n < 2^53) as a varint. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size += 1;
  }
  return size;
}

/** A 64-bit field's value as an unsigned number when it is exact, else as a bigint. */
function u64(v: bigint): number | bigint {
  // Number() first: no bigint arithmetic (which allocates) for the usual small values.
  const n = Number(v);
  if (n >= 0 && n <= Number.MAX_SAFE_INTEGER) return n;
  return v < 0n ? v & U64 : v; // negative int64: two's complement, 10 bytes on the wire
}

function u64Size(v: number | bigint): number {
  if (typeof v === "number") return varintSize(v);
  let size = 1;
  while (v >= 128n) {
    v >>= 7n;
    size += 1;
  }
  return size;
}

/** int32 on the wire: a negative value is sign-extended to 64 bits (10 bytes). */
const int32 = (n: number): number | bigint => (n < 0 ? BigInt(n) & U64 : n);

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}
  varint(n: number): void {
    while (n >= 128) {
      this.buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }
  u64(v: number | bigint): void {
    if (typeof v === "number") {
      this.varint(v);
      return;
    }
    while (v >= 128n) {
      this.buf[this.pos++] = Number(v & 127n) | 128;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
  }
}

/**
 * `CoordinatorMessage { seq, ack_seq, heartbeat_ack }` encoded by hand into one buffer of
 * its exact size. The ack is the message the leader sends most (one per heartbeat per
 * worker); building it through protobuf-es (`create`, then `toBinary` with its writer's
 * chunks) allocated about 1.9 KB per ack, a third of all the leader allocated per
 * heartbeat, and the young-generation collections that garbage cost were the leader's ack
 * latency tail. Fields at their default are left out, as protobuf-es does. Acks that carry
 * `recorded_finals` are not encoded here (the session uses protobuf-es for those).
 */
export function encodeHeartbeatAckMessage(seq: bigint, ackSeq: bigint, a: HeartbeatAckFields): Buffer {
  const ts = u64(a.ts);
  const shardId = int32(a.shardId);
  const version = u64(a.shardVersion);
  const epoch = u64(a.leaderEpoch);
  const hbSeq = u64(a.heartbeatSeq);
  const nodeIdBytes = Buffer.byteLength(a.nodeId, "utf8");
  let packed = 0;
  for (const s of a.shards) packed += varintSize(s);
  let ack = 0;
  if (nodeIdBytes > 0) ack += 1 + varintSize(nodeIdBytes) + nodeIdBytes;
  if (ts !== 0) ack += 1 + u64Size(ts);
  if (a.accepted) ack += 2;
  if (a.totalShards !== 0) ack += 1 + varintSize(a.totalShards);
  if (shardId !== 0) ack += 1 + u64Size(shardId);
  if (a.shards.length > 0) ack += 1 + varintSize(packed) + packed;
  if (version !== 0) ack += 1 + u64Size(version);
  if (a.phase !== 0) ack += 1 + varintSize(a.phase);
  if (a.active) ack += 2;
  if (epoch !== 0) ack += 1 + u64Size(epoch);
  if (hbSeq !== 0) ack += 1 + u64Size(hbSeq);
  if (a.sessionTimeoutMs !== 0) ack += 1 + varintSize(a.sessionTimeoutMs);
  if (a.heartbeatIntervalMs !== 0) ack += 1 + varintSize(a.heartbeatIntervalMs);
  const s = u64(seq);
  const as = u64(ackSeq);
  let total = 1 + varintSize(ack) + ack;
  if (s !== 0) total += 1 + u64Size(s);
  if (as !== 0) total += 1 + u64Size(as);

  const w = new Writer(Buffer.allocUnsafe(total));
  if (s !== 0) {
    w.varint(tag(MSG_SEQ, VARINT));
    w.u64(s);
  }
  if (as !== 0) {
    w.varint(tag(MSG_ACK_SEQ, VARINT));
    w.u64(as);
  }
  w.varint(tag(MSG_HEARTBEAT_ACK, LEN));
  w.varint(ack);
  if (nodeIdBytes > 0) {
    w.varint(tag(1, LEN));
    w.varint(nodeIdBytes);
    w.pos += w.buf.write(a.nodeId, w.pos, "utf8");
  }
  if (ts !== 0) {
    w.varint(tag(2, VARINT));
    w.u64(ts);
  }
  if (a.accepted) {
    w.varint(tag(3, VARINT));
    w.varint(1);
  }
  if (a.totalShards !== 0) {
    w.varint(tag(5, VARINT));
    w.varint(a.totalShards);
  }
  if (shardId !== 0) {
    w.varint(tag(6, VARINT));
    w.u64(shardId);
  }
  if (a.shards.length > 0) {
    w.varint(tag(7, LEN));
    w.varint(packed);
    for (const x of a.shards) w.varint(x);
  }
  if (version !== 0) {
    w.varint(tag(8, VARINT));
    w.u64(version);
  }
  if (a.phase !== 0) {
    w.varint(tag(9, VARINT));
    w.varint(a.phase);
  }
  if (a.active) {
    w.varint(tag(10, VARINT));
    w.varint(1);
  }
  if (epoch !== 0) {
    w.varint(tag(11, VARINT));
    w.u64(epoch);
  }
  if (hbSeq !== 0) {
    w.varint(tag(12, VARINT));
    w.u64(hbSeq);
  }
  if (a.sessionTimeoutMs !== 0) {
    w.varint(tag(13, VARINT));
    w.varint(a.sessionTimeoutMs);
  }
  if (a.heartbeatIntervalMs !== 0) {
    w.varint(tag(14, VARINT));
    w.varint(a.heartbeatIntervalMs);
  }
  if (w.pos !== total) throw new Error(`heartbeat ack encoding: wrote ${w.pos} of ${total} bytes`);
  return w.buf;
}
