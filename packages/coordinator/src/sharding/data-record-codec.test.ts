import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DataPageSchema, DataRecordSchema } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeDataPages, encodeDataRecord } from "./data-record-codec.js";

describe("encodeDataRecord", () => {
  it("gives exactly the bytes toBinary gives", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", maxLength: 300 }),
        fc.uint8Array({ maxLength: 20_000 }),
        (id, payload) => {
          const want = toBinary(DataRecordSchema, create(DataRecordSchema, { id, payload }));
          expect(Buffer.from(encodeDataRecord(id, payload)).equals(Buffer.from(want))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("handles lengths across varint boundaries", () => {
    for (const n of [0, 1, 127, 128, 16_383, 16_384, 2_097_152]) {
      const payload = new Uint8Array(n).fill(7);
      const want = toBinary(DataRecordSchema, create(DataRecordSchema, { id: "x".repeat(n % 300), payload }));
      expect(Buffer.from(encodeDataRecord("x".repeat(n % 300), payload)).equals(Buffer.from(want))).toBe(
        true,
      );
    }
  });
});

describe("encodeDataPages", () => {
  const recordArb = fc.record({
    id: fc.string({ unit: "grapheme", maxLength: 40 }),
    payload: fc.uint8Array({ maxLength: 3000 }),
  });

  it("gives, per message, exactly the bytes toBinary(DataPage) gives, and every record once in order", () => {
    fc.assert(
      fc.property(
        fc.array(recordArb, { maxLength: 60 }),
        fc.integer({ min: 1, max: 20_000 }),
        (records, max) => {
          const messages = encodeDataPages(records, max);
          const back = messages.flatMap((m) => fromBinary(DataPageSchema, m).records);
          expect(back.map((r) => r.id)).toEqual(records.map((r) => r.id));
          expect(back.map((r) => Buffer.from(r.payload).toString("hex"))).toEqual(
            records.map((r) => Buffer.from(r.payload).toString("hex")),
          );
          for (const m of messages) {
            const page = fromBinary(DataPageSchema, m);
            expect(page.records.length).toBeGreaterThan(0);
            expect(Buffer.from(toBinary(DataPageSchema, page)).equals(m)).toBe(true);
            // Over the bound only when one record alone is larger.
            if (m.length > max) expect(page.records).toHaveLength(1);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("sends no message for no records", () => {
    expect(encodeDataPages([], 1024)).toEqual([]);
  });
});
