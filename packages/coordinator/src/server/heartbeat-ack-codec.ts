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

/**
 * A 64-bit field's value as a number, or -1 when it is negative or beyond 2^53 (never in
 * practice: sequence numbers, epochs, versions and millisecond clocks; the caller then
 * falls back to protobuf-es). Numbers only from here on: no bigint arithmetic, which
 * allocates, and one shape for every function below.
 */
const small = (v: bigint): number => (v >= 0n && v <= MAX_SAFE ? Number(v) : -1);

/**
 * Writes protobuf wire format into `buf`, or, without a buffer, only counts the bytes it
 * would write: the same calls size a message and then write it, so the two cannot disagree.
 */
class Writer {
  pos = 0;
  constructor(readonly buf?: Buffer) {}
  varint(n: number): void {
    const buf = this.buf;
    if (buf === undefined) {
      this.pos += varintSize(n);
      return;
    }
    while (n >= 128) {
      buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }
  /** A varint field, left out at its default (0, false) as protobuf-es does. */
  field(field: number, n: number): void {
    if (n === 0) return;
    this.varint(tag(field, VARINT));
    this.varint(n);
  }
  /** An int32 field: a negative value is sign-extended to 64 bits, always 10 bytes. */
  int32(field: number, n: number): void {
    if (n >= 0) {
      this.field(field, n);
      return;
    }
    this.varint(tag(field, VARINT));
    const buf = this.buf;
    if (buf === undefined) {
      this.pos += 10;
      return;
    }
    // Two's complement over 64 bits: the low 32 bits are n's, the high 32 bits all ones.
    let lo = n >>> 0;
    for (let i = 0; i < 4; i++) {
      buf[this.pos++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    // Bits 28-34: the low word's top 4 bits and three ones; then 7 ones x 4, then the last one.
    buf[this.pos++] = (lo & 15) | 0x70 | 128;
    for (let i = 0; i < 4; i++) buf[this.pos++] = 0xff;
    buf[this.pos++] = 1;
  }
  /** A string field of `bytes` UTF-8 bytes, left out when empty. */
  string(field: number, s: string, bytes: number): void {
    if (bytes === 0) return;
    this.varint(tag(field, LEN));
    this.varint(bytes);
    if (this.buf === undefined) this.pos += bytes;
    else this.pos += this.buf.write(s, this.pos, "utf8");
  }
  /** A packed repeated uint32 field of `bytes` varint bytes, left out when empty. */
  packed(field: number, values: readonly number[], bytes: number): void {
    if (values.length === 0) return;
    this.varint(tag(field, LEN));
    this.varint(bytes);
    for (const v of values) this.varint(v);
  }
}

/** Counts bytes only (one for the module: encoding is synchronous). */
const sizer = new Writer();

/** The HeartbeatAck's fields (shard.proto numbers), with its 64-bit values already as numbers. */
function writeAck(
  w: Writer,
  a: HeartbeatAckFields,
  nodeIdBytes: number,
  packedBytes: number,
  ts: number,
  version: number,
  epoch: number,
  hbSeq: number,
): void {
  w.string(1, a.nodeId, nodeIdBytes);
  w.field(2, ts);
  w.field(3, a.accepted ? 1 : 0);
  w.field(5, a.totalShards);
  w.int32(6, a.shardId);
  w.packed(7, a.shards, packedBytes);
  w.field(8, version);
  w.field(9, a.phase);
  w.field(10, a.active ? 1 : 0);
  w.field(11, epoch);
  w.field(12, hbSeq);
  w.field(13, a.sessionTimeoutMs);
  w.field(14, a.heartbeatIntervalMs);
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
  let packedBytes = 0;
  for (const x of a.shards) packedBytes += varintSize(x);
  sizer.pos = 0;
  writeAck(sizer, a, nodeIdBytes, packedBytes, ts, version, epoch, hbSeq);
  const ack = sizer.pos;
  sizer.pos = 0;
  sizer.field(MSG_SEQ, s);
  sizer.field(MSG_ACK_SEQ, as);
  const total = sizer.pos + 1 + varintSize(ack) + ack;

  const buf = Buffer.allocUnsafe(total);
  const w = new Writer(buf);
  w.field(MSG_SEQ, s);
  w.field(MSG_ACK_SEQ, as);
  w.varint(tag(MSG_HEARTBEAT_ACK, LEN));
  w.varint(ack);
  writeAck(w, a, nodeIdBytes, packedBytes, ts, version, epoch, hbSeq);
  if (w.pos !== total) throw new Error(`heartbeat ack encoding: wrote ${w.pos} of ${total} bytes`);
  return buf;
}
