import type { Etcd3 } from "etcd3";
import { CoordinatorError } from "../errors.js";
import type { KeyLayout } from "../store/keys.js";
import { groupConfigSchema, parseRecord } from "../store/records.js";
import {
  bucketLabel,
  bucketOf,
  type DataLayout,
  dataLayoutSchema,
  defaultBuckets,
  maxBuckets,
} from "./data-layout.js";

/** One record to load: its id (its shard is `shardOf(id, totalShards)`) and payload. */
export interface DataRecordInput {
  readonly id: string;
  readonly payload: string | Uint8Array;
}

/** Options of {@link loadShardData}. */
export interface LoadShardDataOptions {
  /**
   * Bucket count B of a group whose data has no layout yet (see data-layout.ts); refused
   * when the group already has a layout with another B.
   * @default `defaultBuckets(group config, expectedRecords)`: a sticky group's shard count,
   * else a highly composite number sized to the dataset
   */
  readonly buckets?: number;
  /** Record count used to choose the default bucket count. @default the length of an array input, else 0 */
  readonly expectedRecords?: number;
  /**
   * Records per transaction. etcd refuses transactions of more than `--max-txn-ops`
   * (default 128) operations, and a batch may also carry the layout update.
   * @default 127
   */
  readonly batchRecords?: number;
  /**
   * Request bytes per transaction (keys and values), under etcd's `--max-request-bytes`
   * (default 1.5 MiB). A single record larger than this is refused.
   * @default 1048576
   */
  readonly batchBytes?: number;
  /** Transactions in flight. @default 4 */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  /** Called after each committed transaction with the records and transactions so far. */
  readonly onCommitted?: (records: number, transactions: number) => void;
}

/** The request bytes one transaction of the loader carries at most (under etcd's 1.5 MiB). */
export const maxLoadBatchBytes = 1 << 20;

/** What {@link loadShardData} wrote. */
export interface LoadShardDataResult {
  readonly records: number;
  readonly transactions: number;
  readonly layout: DataLayout;
  /** `<dataNs>/<group>/`: where the records are. */
  readonly prefix: string;
}

/**
 * Records `0..count-1` with ids zero-padded to the width of `count - 1` (so etcd's bytewise
 * order is numeric order: `000`..`199` for 200) and payload `item-<id>`.
 *
 * @example
 * ```ts
 * sequentialRecords(3); // [{ id: "0", payload: "item-0" }, { id: "1", ... }, { id: "2", ... }]
 * ```
 */
export function sequentialRecords(count: number): DataRecordInput[] {
  const width = String(Math.max(0, count - 1)).length;
  return Array.from({ length: count }, (_, i) => {
    const id = String(i).padStart(width, "0");
    return { id, payload: `item-${id}` };
  });
}

// Bytes a put adds to a transaction request besides its key and value (field tags, lengths).
const putOverheadBytes = 16;

interface Current {
  layout: DataLayout;
  /** Mod revision of the layout key as last read or written. */
  mod: string;
}

/**
 * Writes records for the built-in data source in the group's layout
 * (`<dataNs>/<group>/b/<bucket>/<id>`), creating the layout on the first load. Batched in
 * transactions of at most `batchRecords` records and `batchBytes` bytes; each one is
 * guarded by the layout key's mod revision and raises the layout's `maxRecordBytes` in the
 * same transaction when it carries a larger record, so a reader never meets a record
 * larger than the layout it read says. Loading an id again overwrites it.
 *
 * @example
 * ```ts
 * await loadShardData(client, keyLayout("/shardmgr"), "billing", sequentialRecords(10_000));
 * ```
 */
export async function loadShardData(
  client: Etcd3,
  keys: KeyLayout,
  group: string,
  records: Iterable<DataRecordInput> | AsyncIterable<DataRecordInput>,
  options: LoadShardDataOptions = {},
): Promise<LoadShardDataResult> {
  const batchRecords = Math.max(1, Math.min(options.batchRecords ?? 127, 127));
  const batchBytes = options.batchBytes ?? maxLoadBatchBytes;
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const layoutKey = keys.dataLayout(group);
  const expected = options.expectedRecords ?? (Array.isArray(records) ? records.length : 0);
  const current = await ensureLayout(client, keys, group, options.buckets, expected);
  const encoder = new TextEncoder();

  let written = 0;
  let transactions = 0;
  const commit = async (batch: Map<string, Buffer>, largest: number): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      const { layout, mod } = current;
      const raise = largest > layout.maxRecordBytes;
      const next: DataLayout = { ...layout, maxRecordBytes: largest };
      const puts = [...batch].map(([key, value]) => client.put(key).value(value));
      if (raise) puts.push(client.put(layoutKey).value(JSON.stringify(next)));
      const res = await client
        .if(layoutKey, "Mod", "==", mod)
        .then(...puts)
        .commit();
      transactions += 1;
      if (res.succeeded) {
        written += batch.size;
        options.onCommitted?.(written, transactions);
        // Only move forward: a concurrent batch may have raised it further meanwhile.
        if (raise && BigInt(res.header.revision) > BigInt(current.mod)) {
          current.layout = next;
          current.mod = res.header.revision;
        }
        return;
      }
      // Another batch (or loader) changed the layout: read it again and retry.
      if (attempt >= 20) throw new CoordinatorError("etcd_unavailable", `${layoutKey} keeps changing`);
      const now = await readLayout(client, layoutKey);
      if (now === undefined || now.layout.buckets !== layout.buckets)
        throw new CoordinatorError(
          "invalid_data",
          `${layoutKey} was deleted or changed to ${now?.layout.buckets} buckets during the load`,
        );
      current.layout = now.layout;
      current.mod = now.mod;
    }
  };

  const inFlight = new Set<Promise<void>>();
  // Keys of the transactions in flight: a batch writing one of them again waits for them,
  // so an id sent twice keeps the payload sent last.
  const keysInFlight = new Map<string, number>();
  let failure: unknown;
  const submit = async (batch: Map<string, Buffer>, largest: number) => {
    if ([...batch.keys()].some((k) => keysInFlight.has(k))) await Promise.all(inFlight);
    for (const k of batch.keys()) keysInFlight.set(k, (keysInFlight.get(k) ?? 0) + 1);
    const p = commit(batch, largest)
      .catch((e: unknown) => {
        failure ??= e;
      })
      .finally(() => {
        for (const k of batch.keys()) {
          const n = (keysInFlight.get(k) ?? 1) - 1;
          if (n === 0) keysInFlight.delete(k);
          else keysInFlight.set(k, n);
        }
      });
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    if (inFlight.size >= concurrency) await Promise.race(inFlight);
  };

  // Keyed by etcd key: one transaction may not put a key twice (the last payload wins).
  let batch = new Map<string, Buffer>();
  let bytes = 0;
  let largest = 0;
  let first = true;
  for await (const r of records) {
    options.signal?.throwIfAborted();
    if (failure !== undefined) break;
    if (typeof r.id !== "string" || r.id === "")
      throw new CoordinatorError(
        "invalid_data",
        `record id ${JSON.stringify(r.id)} is not a non-empty string`,
      );
    const key = keys.dataRecord(
      group,
      bucketLabel(bucketOf(r.id, current.layout.buckets), current.layout.buckets),
      r.id,
    );
    const value = Buffer.from(typeof r.payload === "string" ? encoder.encode(r.payload) : r.payload);
    const size = Buffer.byteLength(key) + value.length;
    if (size + putOverheadBytes > batchBytes)
      throw new CoordinatorError(
        "invalid_data",
        `record ${JSON.stringify(r.id.slice(0, 40))} is ${size} bytes, above the ${batchBytes}-byte transaction limit`,
      );
    if (batch.size >= batchRecords || bytes + size + putOverheadBytes > batchBytes) {
      // The first batch goes alone: it usually raises maxRecordBytes, which would make the
      // batches in flight beside it fail their guard and retry.
      await submit(batch, largest);
      if (first) await Promise.all(inFlight);
      first = false;
      batch = new Map();
      bytes = 0;
      largest = 0;
    }
    batch.delete(key);
    batch.set(key, value);
    bytes += size + putOverheadBytes;
    largest = Math.max(largest, size);
  }
  if (failure === undefined && batch.size > 0) await submit(batch, largest);
  await Promise.all(inFlight);
  if (failure !== undefined) throw CoordinatorError.from(failure);
  return { records: written, transactions, layout: current.layout, prefix: keys.dataGroupPrefix(group) };
}

async function readLayout(client: Etcd3, layoutKey: string): Promise<Current | undefined> {
  const res = await client.get(layoutKey).exec();
  const kv = res.kvs[0];
  if (kv === undefined) return undefined;
  return { layout: parseRecord(dataLayoutSchema, layoutKey, kv.value.toString()), mod: kv.mod_revision };
}

/** Reads the group's layout, or creates it (exactly once, whoever else races to). */
async function ensureLayout(
  client: Etcd3,
  keys: KeyLayout,
  group: string,
  buckets: number | undefined,
  expectedRecords: number,
): Promise<Current> {
  if (buckets !== undefined && (!Number.isInteger(buckets) || buckets < 1 || buckets > maxBuckets))
    throw new CoordinatorError(
      "invalid_config",
      `buckets must be an integer in 1..${maxBuckets}, got ${buckets}`,
    );
  const layoutKey = keys.dataLayout(group);
  for (;;) {
    const existing = await readLayout(client, layoutKey);
    if (existing !== undefined) {
      if (buckets !== undefined && buckets !== existing.layout.buckets)
        throw new CoordinatorError(
          "invalid_config",
          `the data of group ${group} is laid out in ${existing.layout.buckets} buckets, not ${buckets}; load without --buckets, or delete it first (etcdctl del --prefix ${keys.dataGroupPrefix(group)})`,
        );
      return existing;
    }
    let chosen = buckets;
    if (chosen === undefined) {
      const configRaw = await client.get(keys.config(group)).string();
      let config: { strategy?: string; shards?: number } = {};
      if (configRaw !== null) {
        try {
          config = parseRecord(groupConfigSchema, keys.config(group), configRaw);
        } catch (e) {
          throw new CoordinatorError(
            "invalid_config",
            `${e instanceof Error ? e.message : String(e)}; choose the bucket count explicitly (--buckets)`,
          );
        }
      }
      chosen = defaultBuckets(config, expectedRecords);
    }
    const layout: DataLayout = { buckets: chosen, maxRecordBytes: 0 };
    const res = await client
      .if(layoutKey, "Create", "==", 0)
      .then(client.put(layoutKey).value(JSON.stringify(layout)))
      .commit();
    if (res.succeeded) return { layout, mod: res.header.revision };
    // Someone else created it first: use theirs (checked against `buckets` above).
  }
}
