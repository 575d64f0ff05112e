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
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Bytes of `n` (0 <= n < 2^53) as a varint. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size += 1;
  }
  return size;
}

/** An int32 on the wire: a negative one is sign-extended to 64 bits, always 10 bytes. */
const int32Size = (n: number) => (n < 0 ? 10 : varintSize(n));

/**
 * A 64-bit field's value as a number, or -1 when it is negative or beyond 2^53 (never in
 * practice: sequence numbers, epochs, versions and millisecond clocks; the caller then
 * falls back to protobuf-es). Numbers only from here on: no bigint arithmetic, which
 * allocates, and one shape for every function below.
 */
const small = (v: bigint): number => (v >= 0n && v <= MAX_SAFE ? Number(v) : -1);

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
  int32(n: number): void {
    if (n >= 0) {
      this.varint(n);
      return;
    }
    // Two's complement over 64 bits: the low 32 bits are n's, the high 32 bits all ones.
    let lo = n >>> 0;
    for (let i = 0; i < 4; i++) {
      this.buf[this.pos++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    // Bits 28-34: the low word's top 4 bits and three ones; then 7 ones x 4, then the last one.
    this.buf[this.pos++] = (lo & 15) | 0x70 | 128;
    for (let i = 0; i < 4; i++) this.buf[this.pos++] = 0xff;
    this.buf[this.pos++] = 1;
  }
}

/**
 * `CoordinatorMessage { seq, ack_seq, heartbeat_ack }` encoded by hand into one buffer of
 * its exact size. The ack is the message the leader sends most (one per heartbeat per
 * worker); building it through protobuf-es (`create`, then `toBinary` with its writer's
 * chunks) allocated about 1.9 KB per ack, a third of all the leader allocated per
 * heartbeat, and the young-generation collections that garbage cost were the leader's ack
 * latency tail. Fields at their default are left out, as protobuf-es does. Acks that carry
 * `recorded_finals` are not encoded here (the session uses protobuf-es for those), nor are
 * 64-bit values outside [0, 2^53): then this returns undefined and the caller does the same.
 */
export function encodeHeartbeatAckMessage(
  seq: bigint,
  ackSeq: bigint,
  a: HeartbeatAckFields,
): Buffer | undefined {
  const s = small(seq);
  const as = small(ackSeq);
  const ts = small(a.ts);
  const version = small(a.shardVersion);
  const epoch = small(a.leaderEpoch);
  const hbSeq = small(a.heartbeatSeq);
  if (s < 0 || as < 0 || ts < 0 || version < 0 || epoch < 0 || hbSeq < 0) return undefined;
  const nodeIdBytes = Buffer.byteLength(a.nodeId, "utf8");
  let packed = 0;
  for (const x of a.shards) packed += varintSize(x);
  let ack = 0;
  if (nodeIdBytes > 0) ack += 1 + varintSize(nodeIdBytes) + nodeIdBytes;
  if (ts !== 0) ack += 1 + varintSize(ts);
  if (a.accepted) ack += 2;
  if (a.totalShards !== 0) ack += 1 + varintSize(a.totalShards);
  if (a.shardId !== 0) ack += 1 + int32Size(a.shardId);
  if (a.shards.length > 0) ack += 1 + varintSize(packed) + packed;
  if (version !== 0) ack += 1 + varintSize(version);
  if (a.phase !== 0) ack += 1 + varintSize(a.phase);
  if (a.active) ack += 2;
  if (epoch !== 0) ack += 1 + varintSize(epoch);
  if (hbSeq !== 0) ack += 1 + varintSize(hbSeq);
  if (a.sessionTimeoutMs !== 0) ack += 1 + varintSize(a.sessionTimeoutMs);
  if (a.heartbeatIntervalMs !== 0) ack += 1 + varintSize(a.heartbeatIntervalMs);
  let total = 1 + varintSize(ack) + ack;
  if (s !== 0) total += 1 + varintSize(s);
  if (as !== 0) total += 1 + varintSize(as);

  const w = new Writer(Buffer.allocUnsafe(total));
  if (s !== 0) {
    w.varint(tag(MSG_SEQ, VARINT));
    w.varint(s);
  }
  if (as !== 0) {
    w.varint(tag(MSG_ACK_SEQ, VARINT));
    w.varint(as);
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
    w.varint(ts);
  }
  if (a.accepted) {
    w.varint(tag(3, VARINT));
    w.varint(1);
  }
  if (a.totalShards !== 0) {
    w.varint(tag(5, VARINT));
    w.varint(a.totalShards);
  }
  if (a.shardId !== 0) {
    w.varint(tag(6, VARINT));
    w.int32(a.shardId);
  }
  if (a.shards.length > 0) {
    w.varint(tag(7, LEN));
    w.varint(packed);
    for (const x of a.shards) w.varint(x);
  }
  if (version !== 0) {
    w.varint(tag(8, VARINT));
    w.varint(version);
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
    w.varint(epoch);
  }
  if (hbSeq !== 0) {
    w.varint(tag(12, VARINT));
    w.varint(hbSeq);
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
