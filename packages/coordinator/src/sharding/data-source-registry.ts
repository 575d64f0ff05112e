import type { Etcd3 } from "etcd3";
import type { Logger } from "pino";
import type { EtcdSecurity } from "../store/etcd-security.js";
import type { KeyLayout } from "../store/keys.js";
import {
  assignmentRecordSchema,
  type GroupConfig,
  groupConfigSchema,
  parseRecord,
} from "../store/records.js";
import type { DataSink, DataSource, PutOptions, PutResult, ShardRecord } from "./data-source.js";
import { EtcdDataSource } from "./data-source.js";
import { type DataSourceConfig, parseDataSourceConfig } from "./data-source-config.js";
import { DataSourceError } from "./data-source-error.js";
import { PostgresDataSource, type PostgresDataSourceOptions } from "./postgres-data-source.js";

/** Options of {@link DataSourceRegistry.create}. */
export interface DataSourceRegistryOptions {
  /** The replica's etcd client: group configs and assignments are read through it. */
  readonly client: Etcd3;
  readonly keys: KeyLayout;
  /** etcd endpoints for the built-in source's own client. */
  readonly etcdEndpoints: readonly string[];
  /** TLS and user credentials of that client (the replica's `--etcd-*` flags). */
  readonly etcdSecurity?: EtcdSecurity;
  readonly log: Logger;
  /** Options of every PostgreSQL source (env, page and batch sizes). */
  readonly postgres?: Omit<PostgresDataSourceOptions, "log" | "onFetched">;
  /**
   * How long a source whose config or credentials were refused is remembered
   * before the next call tries again, in ms: a burst of calls gets the same clear error
   * instead of a connection attempt each.
   * @default 2000
   */
  readonly failureCacheMs?: number;
}

/** Rows (records) and bytes read from the sources of one kind since the registry started. */
export interface SourceReadTotals {
  rows: number;
  bytes: number;
}

/** A group's source as resolved for one call. */
export interface ResolvedDataSource {
  readonly config: GroupConfig;
  readonly sourceConfig: DataSourceConfig;
  readonly source: (DataSource & DataSink & { readonly kind: string }) | PostgresDataSource;
}

interface Entry {
  readonly source: PostgresDataSource;
  readonly ready: Promise<void>;
  refs: number;
  failedAt?: number;
}

/**
 * The data source of each group, chosen by its config (`dataSource` in
 * `<ns>/groups/<g>/config`): the built-in etcd source when there is none, else one
 * PostgreSQL source per distinct config, shared by the groups that name it, verified
 * (connection, credentials, table) when first used so that a bad config fails its calls
 * at once with a clear error. It is itself a {@link DataSource} and {@link DataSink} that
 * routes each call by group, so FetchShardData and PutShardData need nothing else.
 *
 * A source whose config no group uses any more is closed once its last call ends.
 *
 * @example
 * ```ts
 * const sources = DataSourceRegistry.create({ client, keys, etcdEndpoints, log });
 * for await (const r of sources.read("billing", 1, 4, { afterId: "", pageSize: 100, signal })) use(r);
 * await sources.close();
 * ```
 */
export class DataSourceRegistry implements DataSource, DataSink {
  readonly #o: DataSourceRegistryOptions;
  readonly #etcd: EtcdDataSource;
  readonly #entries = new Map<string, Entry>();
  readonly #groupKey = new Map<string, string>();
  /** Summed over every PostgreSQL source ever opened, closed ones included. */
  readonly #postgresRead: SourceReadTotals = { rows: 0, bytes: 0 };
  #closed: Promise<void> | undefined;

  private constructor(options: DataSourceRegistryOptions) {
    this.#o = options;
    this.#etcd = EtcdDataSource.create(options.etcdEndpoints, options.keys, {}, options.etcdSecurity);
  }

  /** A registry (no I/O until the first call). */
  static create(options: DataSourceRegistryOptions): DataSourceRegistry {
    return new DataSourceRegistry(options);
  }

  /**
   * What reads fetched from the stores, by kind, cumulative: the replica exports it as
   * `shard_data_source_rows_read_total` and `shard_data_source_bytes_read_total`. Next to what
   * reached the workers it shows read-ahead (PostgreSQL: one page at most) and, for etcd, the
   * records of other shards a read had to skip.
   */
  readTotals(): { etcd: SourceReadTotals; postgres: SourceReadTotals } {
    const etcd = this.#etcd.stats();
    return {
      etcd: { rows: etcd.recordsFetched, bytes: etcd.bytesFetched },
      postgres: { ...this.#postgresRead },
    };
  }

  /** The built-in source (for its stats). */
  get etcd(): EtcdDataSource {
    return this.#etcd;
  }

  /**
   * The group's config and source, verified. Throws DataSourceError: `invalid_config` (bad
   * config or table), `bad_credentials`, `unreachable`.
   */
  async resolve(group: string): Promise<ResolvedDataSource> {
    const config = await this.#groupConfig(group);
    const sourceConfig = parseDataSourceConfig(group, config.dataSource);
    if (sourceConfig.kind === "etcd") {
      this.#moveGroup(group, undefined);
      return { config, sourceConfig, source: this.#etcd };
    }
    const key = JSON.stringify(sourceConfig);
    let entry = this.#entries.get(key);
    const failureCacheMs = this.#o.failureCacheMs ?? 2000;
    if (entry?.failedAt !== undefined && performance.now() - entry.failedAt > failureCacheMs) {
      this.#drop(key, entry);
      entry = undefined;
    }
    if (entry === undefined) entry = this.#open(key, group, sourceConfig);
    this.#moveGroup(group, key);
    await entry.ready;
    return { config, sourceConfig, source: entry.source };
  }

  #open(key: string, group: string, config: DataSourceConfig & { kind: "postgres" }): Entry {
    const log = this.#o.log;
    const source = PostgresDataSource.create(config, {
      ...this.#o.postgres,
      log,
      onFetched: (rows, bytes) => {
        this.#postgresRead.rows += rows;
        this.#postgresRead.bytes += bytes;
      },
    });
    const started = performance.now();
    const entry: Entry = {
      source,
      refs: 0,
      ready: source.verify().then(
        (tableExists) =>
          log.info({
            event: "data_source_ready",
            group,
            kind: "postgres",
            table: config.table,
            tableExists,
            ms: Math.round(performance.now() - started),
          }),
        (e: unknown) => {
          const err = DataSourceError.from(e);
          // A store that is down right now is asked again by the next call (the caller's
          // retry paces it); a config or credentials it refused is remembered for a while.
          if (err.code === "unreachable") {
            if (this.#entries.get(key) === entry) this.#entries.delete(key);
            void source.close();
          } else entry.failedAt = performance.now();
          log.error({
            event: "data_source_invalid",
            group,
            kind: "postgres",
            table: config.table,
            code: err.code,
            err: `group ${group}: ${err.message}`,
          });
          throw new DataSourceError(err.code, `data source of group ${group}: ${err.message}`, {
            cause: err,
          });
        },
      ),
    };
    entry.ready.catch(() => undefined);
    this.#entries.set(key, entry);
    return entry;
  }

  #moveGroup(group: string, key: string | undefined): void {
    const old = this.#groupKey.get(group);
    if (old === key) return;
    if (key === undefined) this.#groupKey.delete(group);
    else this.#groupKey.set(group, key);
    if (old !== undefined) {
      const entry = this.#entries.get(old);
      if (entry !== undefined && entry.refs === 0 && ![...this.#groupKey.values()].includes(old))
        this.#drop(old, entry);
    }
  }

  #drop(key: string, entry: Entry): void {
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
    void entry.source.close();
  }

  #release(key: string, entry: Entry): void {
    entry.refs -= 1;
    if (entry.refs === 0 && this.#entries.get(key) !== entry) void entry.source.close();
    else if (entry.refs === 0 && ![...this.#groupKey.values()].includes(key)) this.#drop(key, entry);
  }

  /** The group's source, kept open (a PostgreSQL one) until `release()`. */
  async #acquire(group: string): Promise<{ resolved: ResolvedDataSource; release: () => void }> {
    const resolved = await this.resolve(group);
    if (!(resolved.source instanceof PostgresDataSource)) return { resolved, release: () => undefined };
    const key = JSON.stringify(resolved.sourceConfig);
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.source !== resolved.source)
      return { resolved, release: () => undefined };
    entry.refs += 1;
    return { resolved, release: () => this.#release(key, entry) };
  }

  async *read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord> {
    const { resolved, release } = await this.#acquire(group);
    try {
      yield* resolved.source.read(group, shardId, totalShards, options);
    } finally {
      release();
    }
  }

  async *readPages(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<readonly ShardRecord[]> {
    const { resolved, release } = await this.#acquire(group);
    try {
      const source: DataSource = resolved.source;
      if (source.readPages !== undefined) yield* source.readPages(group, shardId, totalShards, options);
      else for await (const r of source.read(group, shardId, totalShards, options)) yield [r];
    } finally {
      release();
    }
  }

  async put(group: string, records: AsyncIterable<ShardRecord>, options: PutOptions): Promise<PutResult> {
    const { resolved, release } = await this.#acquire(group);
    try {
      let indexShardCounts = options.indexShardCounts;
      if (resolved.source instanceof PostgresDataSource && indexShardCounts === undefined)
        indexShardCounts = await this.#shardCountsInUse(group, resolved.config);
      return await resolved.source.put(group, records, {
        ...options,
        ...(indexShardCounts === undefined ? {} : { indexShardCounts }),
      });
    } finally {
      release();
    }
  }

  /** The largest record `put` accepts for the group's source (id plus payload, bytes). */
  maxRecordBytes(group: string, resolved: ResolvedDataSource): number {
    return resolved.source instanceof EtcdDataSource ? resolved.source.maxRecordBytes(group) : 64 << 20;
  }

  /** Shard counts worth indexing when a group's table is created: its config's and its assignment's. */
  async #shardCountsInUse(group: string, config: GroupConfig): Promise<number[]> {
    const counts: number[] = [];
    if (config.strategy === "sticky" && config.shards !== undefined) counts.push(config.shards);
    try {
      const raw = await this.#o.client.get(this.#o.keys.assignment(group)).string();
      if (raw !== null)
        counts.push(parseRecord(assignmentRecordSchema, this.#o.keys.assignment(group), raw).totalShards);
    } catch {
      // No assignment to learn from: the first read builds its index.
    }
    return counts;
  }

  async #groupConfig(group: string): Promise<GroupConfig> {
    const key = this.#o.keys.config(group);
    let raw: string | null;
    try {
      raw = await this.#o.client.get(key).string();
    } catch (e) {
      throw new DataSourceError("unreachable", `etcd: ${e instanceof Error ? e.message : String(e)}`, {
        cause: e,
      });
    }
    if (raw === null) return {};
    try {
      return parseRecord(groupConfigSchema, key, raw);
    } catch (e) {
      throw new DataSourceError("invalid_config", e instanceof Error ? e.message : String(e), { cause: e });
    }
  }

  /** Closes every source (waiting for their calls); safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const entries = [...this.#entries.values()];
      this.#entries.clear();
      await Promise.all(entries.map((e) => e.source.close()));
      await this.#etcd.close();
    })();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
