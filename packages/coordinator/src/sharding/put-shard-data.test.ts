import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { type DataRecord, DataRecordSchema } from "@org/proto";
import { describe, expect, it } from "vitest";
import { StatusError } from "../server/shard-server.js";
import type { PutOptions, PutResult, ShardRecord } from "./data-source.js";
import { DataSourceError } from "./data-source-error.js";
import type { ResolvedDataSource } from "./data-source-registry.js";
import { putHeadersFrom, putShardData } from "./put-shard-data.js";

/** An in-memory sink standing in for a source (the interface the handler is given). */
function memorySink(fail?: Error) {
  const stored = new Map<string, string>();
  const source = {
    kind: "memory",
    read: () => (async function* () {})(),
    async put(_g: string, records: AsyncIterable<ShardRecord>, o: PutOptions): Promise<PutResult> {
      let written = 0;
      for await (const r of records) {
        if (fail !== undefined && written === 2) throw fail;
        stored.set(r.id, new TextDecoder().decode(r.payload));
        written += 1;
        o.onCommitted?.({ written, unchanged: 0, batches: written });
      }
      return { written, unchanged: 0, batches: written };
    },
  };
  const resolved = { config: {}, sourceConfig: { kind: "etcd" }, source } as unknown as ResolvedDataSource;
  return {
    stored,
    target: { resolve: async () => resolved, maxRecordBytes: () => 1000 },
  };
}

async function* stream(records: { id: string; payload: string }[]): AsyncIterable<DataRecord> {
  for (const r of records)
    yield create(DataRecordSchema, { id: r.id, payload: new TextEncoder().encode(r.payload) });
}
const signal = new AbortController().signal;

describe("putShardData", () => {
  it("rejects bad records one by one and stores the rest", async () => {
    const { stored, target } = memorySink();
    const res = await putShardData(
      target,
      { group: "g" },
      stream([
        { id: "a", payload: "1" },
        { id: "", payload: "2" },
        { id: "b", payload: "x".repeat(1000) },
        { id: "c\0", payload: "3" },
        { id: "d", payload: "4" },
      ]),
      signal,
    );
    expect(res).toMatchObject({ received: 5n, written: 2n, rejected: 3n });
    expect(res.errors.map((e) => [Number(e.index), e.code])).toEqual([
      [1, status.INVALID_ARGUMENT],
      [2, status.RESOURCE_EXHAUSTED],
      [3, status.INVALID_ARGUMENT],
    ]);
    expect([...stored.keys()]).toEqual(["a", "d"]);
  });

  it("ends a call past its limits with RESOURCE_EXHAUSTED, saying how far it got", async () => {
    const { target } = memorySink();
    const limits = { maxRecordBytes: 100, maxCallRecords: 3, maxCallBytes: 1 << 20, maxErrors: 10 };
    const records = Array.from({ length: 5 }, (_, i) => ({ id: `r${i}`, payload: "p" }));
    const err = await putShardData(target, { group: "g" }, stream(records), signal, limits).catch((e) => e);
    expect(err).toBeInstanceOf(StatusError);
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.message).toMatch(/more than 3 records/);
    expect(err.metadata.get("x-put-received")).toEqual(["4"]);
    expect(err.metadata.get("x-put-written")).toEqual(["3"]);
    const bytes = { ...limits, maxCallRecords: 100, maxCallBytes: 10 };
    const e2 = await putShardData(target, { group: "g" }, stream(records), signal, bytes).catch((e) => e);
    expect(e2.message).toMatch(/more than 10 bytes/);
  });

  it("maps store failures to statuses: UNAVAILABLE for an outage, FAILED_PRECONDITION for a config", async () => {
    const down = memorySink(new DataSourceError("unreachable", "connection refused"));
    const records = Array.from({ length: 5 }, (_, i) => ({ id: `r${i}`, payload: "p" }));
    const e1 = await putShardData(down.target, { group: "g" }, stream(records), signal).catch((e) => e);
    expect(e1.code).toBe(status.UNAVAILABLE);
    expect(e1.metadata.get("x-put-written")).toEqual(["2"]);
    const bad = memorySink(new DataSourceError("bad_credentials", "password authentication failed"));
    const e2 = await putShardData(bad.target, { group: "g" }, stream(records), signal).catch((e) => e);
    expect(e2.code).toBe(status.FAILED_PRECONDITION);
    await expect(putShardData(down.target, { group: "bad group" }, stream([]), signal)).rejects.toMatchObject(
      {
        code: status.INVALID_ARGUMENT,
      },
    );
  });

  it("reads its metadata, refusing malformed numbers", () => {
    const md = new Map([
      ["x-shard-group", "g"],
      ["x-shard-expected-records", "10"],
    ]);
    expect(putHeadersFrom((k) => md.get(k))).toEqual({ group: "g", expectedRecords: 10 });
    md.set("x-shard-buckets", "0");
    expect(() => putHeadersFrom((k) => md.get(k))).toThrow(/x-shard-buckets/);
  });
});
