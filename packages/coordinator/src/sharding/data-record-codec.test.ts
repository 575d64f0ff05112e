import { create, toBinary } from "@bufbuild/protobuf";
import { DataRecordSchema } from "@org/proto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeDataRecord } from "./data-record-codec.js";

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
