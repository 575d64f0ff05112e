// DataRecord {1: string id, 2: bytes payload} encoded by hand: FetchShardData writes one per
// record, and protobuf-es's reflective toBinary costs more than everything else the RM does
// for a small record. Byte for byte what toBinary(DataRecordSchema, ...) gives (proto3:
// empty fields are omitted); data-record-codec.test.ts checks that.

function varintSize(n: number): number {
  let size = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 128)) size += 1;
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  let pos = at;
  let v = n;
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/**
 * The wire bytes of `DataRecord { id, payload }`.
 *
 * @example
 * ```ts
 * encodeDataRecord("a", new Uint8Array([1])); // <0a 01 61 12 01 01>
 * ```
 */
export function encodeDataRecord(id: string, payload: Uint8Array): Buffer {
  const idLen = Buffer.byteLength(id, "utf8");
  const size =
    (idLen > 0 ? 1 + varintSize(idLen) + idLen : 0) +
    (payload.length > 0 ? 1 + varintSize(payload.length) + payload.length : 0);
  const buf = Buffer.allocUnsafe(size);
  let pos = 0;
  if (idLen > 0) {
    buf[pos++] = 0x0a;
    pos = writeVarint(buf, pos, idLen);
    pos += buf.write(id, pos, "utf8");
  }
  if (payload.length > 0) {
    buf[pos++] = 0x12;
    pos = writeVarint(buf, pos, payload.length);
    buf.set(payload, pos);
  }
  return buf;
}
