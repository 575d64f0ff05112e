import { shardOf } from "@org/proto";
import { bucketLabel, bucketsForShard, type DataLayout } from "./data-layout.js";
import type { ShardRecord } from "./data-source.js";
import { mergeAscending } from "./merge-ascending.js";

/** One page of an ascending range read, as etcd returns it. */
export interface RangePage {
  readonly kvs: readonly { readonly key: Buffer; readonly value: Buffer }[];
  /** More keys exist in the range after the last one returned. */
  readonly more: boolean;
}

/**
 * Reads the keys in [start, end) in ascending byte order, at most `limit` of them. Throws
 * {@link PageTooLargeError} when the response outgrew the client's receive limit.
 */
export type RangeReader = (start: Buffer, end: Buffer, limit: number) => Promise<RangePage>;

/** A range response was larger than the client accepts (gRPC RESOURCE_EXHAUSTED). */
export class PageTooLargeError extends Error {
  override name = "PageTooLargeError";
}

/** What reads fetched, cumulative (for metrics, and to measure how much a read costs). */
export interface DataReadStats {
  /** Range requests sent (including retried ones). */
  rangeRequests: number;
  /** Records (keys) received, kept or not. */
  recordsFetched: number;
  /** Key and value bytes received. */
  bytesFetched: number;
  /** Range requests that came back too large and were retried with a smaller page. */
  pagesShrunk: number;
}

/** A fresh set of zero counters. */
export function emptyDataReadStats(): DataReadStats {
  return { rangeRequests: 0, recordsFetched: 0, bytesFetched: 0, pagesShrunk: 0 };
}

/** Options of {@link readShardRecords}. */
export interface ReadShardRecordsOptions {
  /** Yield only ids strictly after this one (bytewise); "" from the start. */
  readonly afterId: string;
  /** Most records one range request asks for, per bucket. */
  readonly pageSize: number;
  readonly signal: AbortSignal;
  /**
   * Largest range response to ask for, in bytes, estimated from the layout's
   * `maxRecordBytes`. A quarter of etcd3's (grpc-js's) default 4 MiB receive limit, so a
   * record up to 4 times larger than recorded still fits.
   * @default 1048576
   */
  readonly pageBytes?: number;
  /**
   * Bytes buffered by one read across all its buckets (each holds one page at most).
   * @default 8388608
   */
  readonly memoryBytes?: number;
  /** Counters to add to. */
  readonly stats?: DataReadStats;
}

// Bytes a KeyValue carries besides its key and value (revisions, version, lease, framing).
const kvOverheadBytes = 48;

interface Entry {
  readonly idBytes: Buffer;
  readonly value: Buffer;
}

/** The first key after every key starting with `prefix` (its last byte plus one). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // an all-0xff prefix: to the end of the keyspace
}

/**
 * The records of shard `shardId` of `totalShards` stored in `layout`, in ascending id order
 * (bytewise, as etcd orders keys), strictly after `afterId`.
 *
 * Visits only the buckets that can hold the shard's records (see data-layout.ts), each with
 * a paged cursor, and merges them by id: exactly the shard's records are fetched when
 * `totalShards` divides `layout.buckets`, `totalShards / gcd` times as many otherwise. Pages
 * are sized by count and by bytes; one that still comes back too large is retried smaller.
 * Pulled: nothing is fetched beyond what the consumer asks for but one page per bucket.
 *
 * @example
 * ```ts
 * for await (const r of readShardRecords(range, (b) => keys.dataBucketPrefix("g", b), layout, 1, 4,
 *   { afterId: "", pageSize: 100, signal })) send(r);
 * ```
 */
export async function* readShardRecords(
  range: RangeReader,
  bucketPrefix: (label: string) => string,
  layout: DataLayout,
  shardId: number,
  totalShards: number,
  options: ReadShardRecordsOptions,
): AsyncGenerator<ShardRecord, void, undefined> {
  const buckets = bucketsForShard(shardId, totalShards, layout.buckets);
  const pageBytes = options.pageBytes ?? 1 << 20;
  const memoryBytes = options.memoryBytes ?? 8 << 20;
  const perBucketBytes = Math.min(pageBytes, memoryBytes / buckets.length);
  const maxPage = Math.max(1, Math.floor(options.pageSize));
  const stats = options.stats;
  // Shared by every cursor of this read: the largest record seen, and the page size that
  // last came back too large (a record bigger than the layout says: written around the loader).
  let largest = layout.maxRecordBytes;
  let ceiling = maxPage;
  const limit = () =>
    Math.max(1, Math.min(ceiling, maxPage, Math.floor(perBucketBytes / (largest + kvOverheadBytes))));
  const after = options.afterId === "" ? undefined : Buffer.from(options.afterId, "utf8");

  async function* cursor(prefix: Buffer): AsyncGenerator<Entry, void, undefined> {
    const end = prefixEnd(prefix);
    // The smallest key after `prefix+afterId` is that key with a NUL byte appended.
    let from = after === undefined ? prefix : Buffer.concat([prefix, after, Buffer.from([0])]);
    for (;;) {
      options.signal.throwIfAborted();
      let n = limit();
      let page: RangePage;
      for (;;) {
        if (stats !== undefined) stats.rangeRequests += 1;
        try {
          page = await range(from, end, n);
          break;
        } catch (e) {
          if (!(e instanceof PageTooLargeError) || n === 1) throw e;
          if (stats !== undefined) stats.pagesShrunk += 1;
          n = Math.max(1, Math.floor(n / 2));
          ceiling = Math.min(ceiling, n);
        }
      }
      for (const kv of page.kvs) {
        const bytes = kv.key.length + kv.value.length;
        if (bytes > largest) largest = bytes;
        if (stats !== undefined) {
          stats.recordsFetched += 1;
          stats.bytesFetched += bytes;
        }
      }
      for (const kv of page.kvs) yield { idBytes: kv.key.subarray(prefix.length), value: kv.value };
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || last === undefined) return;
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  const sources = buckets.map((b) => cursor(Buffer.from(bucketPrefix(bucketLabel(b, layout.buckets)))));
  for await (const e of mergeAscending(sources, (a, b) => Buffer.compare(a.idBytes, b.idBytes))) {
    const id = e.idBytes.toString("utf8");
    // Exact when totalShards divides the bucket count; otherwise this drops the records of
    // the other shards that share these buckets.
    if (shardOf(id, totalShards) === shardId) yield { id, payload: e.value };
  }
}
