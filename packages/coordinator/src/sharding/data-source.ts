import { type Etcd3, GRPCResourceExhastedError } from "etcd3";
import type { KeyLayout } from "../store/keys.js";
import { parseRecord } from "../store/records.js";
import { dataLayoutSchema } from "./data-layout.js";
import {
  type DataReadStats,
  emptyDataReadStats,
  PageTooLargeError,
  type RangeReader,
  readShardRecords,
} from "./shard-data-reader.js";

/** One record of a shard's data. */
export interface ShardRecord {
  readonly id: string;
  readonly payload: Uint8Array;
}

/**
 * Where FetchShardData reads records. `read` yields the records of `shardId` (of
 * `totalShards`) in ascending id order, strictly after `afterId` when given, fetching about
 * `pageSize` at a time; it stops when `signal` aborts.
 */
export interface DataSource {
  read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord>;
}

/** Options of {@link EtcdDataSource}. */
export interface EtcdDataSourceOptions {
  /**
   * Largest range response one request asks for, in bytes (see `readShardRecords`).
   * @default 1048576
   */
  readonly pageBytes?: number;
  /**
   * Bytes one read buffers across all the buckets it visits.
   * @default 8388608
   */
  readonly memoryBytes?: number;
}

/**
 * The built-in source: records stored under the data namespace (`<ns>-data` by default,
 * outside the coordinator's own prefix) at `<dataNs>/<group>/b/<bucket>/<id>`, as
 * `coordinator data load` (or {@link loadShardData}) writes them, with the group's layout in
 * `<dataNs>/<group>/layout`. The shard of an id is `shardOf(id, totalShards)`, exactly as
 * the SDK's `owns()` computes it; ids are ordered as etcd orders keys (bytewise). A read
 * visits only the buckets that can hold the shard (see data-layout.ts); a group without a
 * layout key has no records.
 *
 * @example
 * ```ts
 * const source = new EtcdDataSource(client, keyLayout("/shardmgr"));
 * for await (const r of source.read("billing", 1, 4, { afterId: "", pageSize: 100, signal })) use(r);
 * ```
 */
export class EtcdDataSource implements DataSource {
  readonly #client: Etcd3;
  readonly #keys: KeyLayout;
  readonly #options: EtcdDataSourceOptions;
  readonly #stats = emptyDataReadStats();

  constructor(client: Etcd3, keys: KeyLayout, options: EtcdDataSourceOptions = {}) {
    this.#client = client;
    this.#keys = keys;
    this.#options = options;
  }

  /** What every read so far fetched (a copy). */
  stats(): DataReadStats {
    return { ...this.#stats };
  }

  async *read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord> {
    const layoutKey = this.#keys.dataLayout(group);
    const raw = await this.#client.get(layoutKey).string();
    if (raw === null) return;
    const layout = parseRecord(dataLayoutSchema, layoutKey, raw);
    const range: RangeReader = async (start, end, limit) => {
      try {
        const res = await this.#client
          .getAll()
          .inRange({ start, end })
          .limit(limit)
          .sort("Key", "Ascend")
          .exec();
        return { kvs: res.kvs, more: res.more };
      } catch (e) {
        if (e instanceof GRPCResourceExhastedError) throw new PageTooLargeError(e.message, { cause: e });
        throw e;
      }
    };
    yield* readShardRecords(
      range,
      (bucket) => this.#keys.dataBucketPrefix(group, bucket),
      layout,
      shardId,
      totalShards,
      { ...this.#options, ...options, stats: this.#stats },
    );
  }
}
