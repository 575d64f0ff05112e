import { Etcd3, GRPCResourceExhastedError, type IOptions, isRecoverableError } from "etcd3";
import { etcdCallTimeoutMs } from "../store/etcd-client.js";
import type { EtcdSecurity } from "../store/etcd-security.js";
import type { KeyLayout } from "../store/keys.js";
import { parseRecord } from "../store/records.js";
import { dataLayoutSchema } from "./data-layout.js";
import { loadShardData, maxLoadBatchBytes } from "./data-loader.js";
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
  /**
   * The same records a page at a time, for sources that fetch in pages anyway: the server
   * writes a page without an await per record. Optional; `read` is used without it.
   */
  readPages?(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<readonly ShardRecord[]>;
}

/** Options of {@link DataSink.put}. */
export interface PutOptions {
  readonly signal: AbortSignal;
  /** Records the call is expected to carry (the etcd source sizes a new layout from it). */
  readonly expectedRecords?: number;
  /** Bucket count of a new etcd layout (see data-layout.ts). */
  readonly buckets?: number;
  /** Shard counts to index when a PostgreSQL table is created. */
  readonly indexShardCounts?: readonly number[];
  /** Called after each committed batch with the totals so far. */
  readonly onCommitted?: (soFar: PutResult) => void;
}

/** What {@link DataSink.put} committed. */
export interface PutResult {
  /** Records stored: new ids and changed payloads (etcd: every record). */
  readonly written: number;
  /** Records already stored with the same payload (sources that can tell). */
  readonly unchanged: number;
  /** Write batches (statements, transactions). */
  readonly batches: number;
}

/**
 * Where PutShardData writes: `put` stores `records` (already validated) in batches,
 * idempotently by id (an id written again keeps the last payload), and resolves once all are
 * committed. A failure leaves the batches committed before it in place.
 */
export interface DataSink {
  put(group: string, records: AsyncIterable<ShardRecord>, options: PutOptions): Promise<PutResult>;
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
 * The receive limit of a source's own client ({@link EtcdDataSource.create}), set
 * deliberately: 8 times the default page budget, so a page of records larger than their
 * layout says still arrives.
 */
export const dataClientMaxReceiveBytes = 8 << 20;

type FaultPolicy = NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

// etcd3's default fault handling retries RESOURCE_EXHAUSTED 3 times and counts it against a
// per-host circuit breaker (3 in a row open it for 5 s, failing every call of the client,
// elections included). A data read must not do that: its client retries only transient
// errors, never a page that was too large (the reader shrinks it), and has no breaker.
const dataRetryPolicy = {
  async execute<T>(
    fn: (context: { signal: AbortSignal; attempt: number }) => PromiseLike<T> | T,
  ): Promise<T> {
    const signal = new AbortController().signal;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn({ signal, attempt });
      } catch (e) {
        const transient =
          e instanceof Error && isRecoverableError(e) && !(e instanceof GRPCResourceExhastedError);
        if (!transient || attempt >= 2) throw e;
      }
    }
  },
} as unknown as FaultPolicy;
const noBreaker = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> =>
    Promise.resolve(fn({ signal: new AbortController().signal })),
} as unknown as FaultPolicy;

/**
 * The built-in source: records stored under the data namespace (`<ns>-data` by default,
 * outside the coordinator's own prefix) at `<dataNs>/<group>/b/<bucket>/<id>`, as
 * `coordinator data load` (or `loadShardData`) writes them, with the group's layout in
 * `<dataNs>/<group>/layout`. The shard of an id is `shardOf(id, totalShards)`, exactly as
 * the SDK's `owns()` computes it; ids are ordered as etcd orders keys (bytewise). A read
 * visits only the buckets that can hold the shard (see data-layout.ts); a group without a
 * layout key has no records.
 *
 * Pages are sized from the layout so that they stay well under the client's receive limit.
 * A page that still comes back too large (records written around the loader) is retried
 * smaller; on a client with etcd3's default fault handling that costs three attempts and
 * can open the host's circuit breaker for every user of the client, which is why
 * {@link EtcdDataSource.create} gives the source a client of its own.
 *
 * @example
 * ```ts
 * const source = EtcdDataSource.create(["http://127.0.0.1:2379"], keyLayout("/shardmgr"));
 * for await (const r of source.read("billing", 1, 4, { afterId: "", pageSize: 100, signal })) use(r);
 * await source.close();
 * ```
 */
export class EtcdDataSource implements DataSource, DataSink {
  readonly kind = "etcd";
  readonly #client: Etcd3;
  #ownsClient = false;
  readonly #keys: KeyLayout;
  readonly #options: EtcdDataSourceOptions;
  readonly #stats = emptyDataReadStats();

  /** A source reading through `client` (shared: `close()` leaves it open). */
  constructor(client: Etcd3, keys: KeyLayout, options: EtcdDataSourceOptions = {}) {
    this.#client = client;
    this.#keys = keys;
    this.#options = options;
  }

  /**
   * A source with an etcd client of its own (no I/O until the first read): unary calls with
   * the coordinator's deadline, a receive limit of {@link dataClientMaxReceiveBytes}, and
   * fault handling that neither retries a too-large page nor trips a circuit breaker, so
   * data reads cannot disturb the election's client. `close()` closes it.
   */
  static create(
    endpoints: readonly string[],
    keys: KeyLayout,
    options: EtcdDataSourceOptions = {},
    security: EtcdSecurity = {},
  ): EtcdDataSource {
    const client = new Etcd3({
      hosts: [...endpoints],
      ...security,
      dialTimeout: etcdCallTimeoutMs,
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + etcdCallTimeoutMs }),
      grpcOptions: { "grpc.max_receive_message_length": dataClientMaxReceiveBytes },
      faultHandling: { host: () => noBreaker, global: dataRetryPolicy },
    });
    const source = new EtcdDataSource(client, keys, options);
    source.#ownsClient = true;
    return source;
  }

  /** Closes the client when the source owns it (`create`); safe to call twice. */
  async close(): Promise<void> {
    if (!this.#ownsClient) return;
    this.#ownsClient = false;
    this.#client.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** What every read so far fetched (a copy). */
  stats(): DataReadStats {
    return { ...this.#stats };
  }

  /**
   * The largest record (id plus payload, in bytes) `put` accepts for `group`: one etcd
   * transaction of the loader holds at most 1 MiB, key included.
   */
  maxRecordBytes(group: string): number {
    return maxLoadBatchBytes - Buffer.byteLength(this.#keys.dataRecord(group, "00000", "")) - 16;
  }

  /** Writes records through {@link loadShardData} (batched transactions in the layout). */
  async put(group: string, records: AsyncIterable<ShardRecord>, options: PutOptions): Promise<PutResult> {
    const r = await loadShardData(this.#client, this.#keys, group, records, {
      signal: options.signal,
      ...(options.buckets === undefined ? {} : { buckets: options.buckets }),
      ...(options.expectedRecords === undefined ? {} : { expectedRecords: options.expectedRecords }),
      ...(options.onCommitted === undefined
        ? {}
        : {
            onCommitted: (written: number, transactions: number) =>
              options.onCommitted?.({ written, unchanged: 0, batches: transactions }),
          }),
    });
    return { written: r.records, unchanged: 0, batches: r.transactions };
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
        // No sort option: etcd returns a range in ascending key order by itself, and
        // etcd 3.4 answers any explicit sort by reading the whole range, limit or not.
        const res = await this.#client.getAll().inRange({ start, end }).limit(limit).exec();
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
