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

/** Bytes of one `DataRecord` inside a `DataPage`: its tag, its length and the record. */
function recordSize(id: string, payload: Uint8Array): number {
  const idLen = Buffer.byteLength(id, "utf8");
  return (
    (idLen > 0 ? 1 + varintSize(idLen) + idLen : 0) +
    (payload.length > 0 ? 1 + varintSize(payload.length) + payload.length : 0)
  );
}

/**
 * The wire bytes of `DataPage { records }`, split into messages of at most `maxBytes` each
 * (a record larger than that goes alone in its own message). Byte for byte what
 * toBinary(DataPageSchema, ...) gives for each message.
 *
 * @example
 * ```ts
 * encodeDataPages([{ id: "a", payload: new Uint8Array([1]) }], 1 << 20); // [<0a 06 0a 01 61 12 01 01>]
 * ```
 */
export function encodeDataPages(
  records: readonly { readonly id: string; readonly payload: Uint8Array }[],
  maxBytes: number,
): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < records.length) {
    // How many records fit, and their encoded size.
    let size = 0;
    let j = i;
    for (; j < records.length; j++) {
      const r = records[j] as { id: string; payload: Uint8Array };
      const inner = recordSize(r.id, r.payload);
      const outer = 1 + varintSize(inner) + inner;
      if (j > i && size + outer > maxBytes) break;
      size += outer;
    }
    const buf = Buffer.allocUnsafe(size);
    let pos = 0;
    for (let k = i; k < j; k++) {
      const r = records[k] as { id: string; payload: Uint8Array };
      const inner = recordSize(r.id, r.payload);
      buf[pos++] = 0x0a;
      pos = writeVarint(buf, pos, inner);
      const idLen = Buffer.byteLength(r.id, "utf8");
      if (idLen > 0) {
        buf[pos++] = 0x0a;
        pos = writeVarint(buf, pos, idLen);
        pos += buf.write(r.id, pos, "utf8");
      }
      if (r.payload.length > 0) {
        buf[pos++] = 0x12;
        pos = writeVarint(buf, pos, r.payload.length);
        buf.set(r.payload, pos);
        pos += r.payload.length;
      }
    }
    out.push(buf);
    i = j;
  }
  return out;
}
