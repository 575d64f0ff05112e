import { readFile } from "node:fs/promises";
import pg from "pg";
import type { Logger } from "pino";
import type { DataSink, DataSource, PutOptions, PutResult, ShardRecord } from "./data-source.js";
import type { PostgresSourceConfig } from "./data-source-config.js";
import { splitTableName } from "./data-source-config.js";
import { DataSourceError } from "./data-source-error.js";
import {
  createShardIndexSql,
  createTableSql,
  hashFunctionSql,
  qualifiedTable,
  readPageSql,
  shardIndexName,
  upsertSql,
} from "./postgres-sql.js";

/** Options of {@link PostgresDataSource.create}. */
export interface PostgresDataSourceOptions {
  /** Where index builds and idle-connection errors are logged. */
  readonly log?: Logger;
  /** Where `passwordEnv` and `urlEnv` are looked up. @default process.env */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Bytes one page of a read may hold (ids and payloads): pages shrink below the requested
   * size when records are large, so a read buffers at most two pages of about this much.
   * @default 1048576
   */
  readonly pageBytes?: number;
  /** Records per upsert statement. @default 500 */
  readonly batchRecords?: number;
  /** Bytes per upsert statement. @default 4194304 */
  readonly batchBytes?: number;
  /** A query (a page, a batch) that takes longer fails, in ms. @default 30000 */
  readonly queryTimeoutMs?: number;
  /** Told the rows and bytes of every page read, as it arrives (the replica's metrics). */
  readonly onFetched?: (rows: number, bytes: number) => void;
}

/** What reads fetched, cumulative. */
export interface PostgresReadStats {
  queries: number;
  rowsFetched: number;
  bytesFetched: number;
}

/** One column of the table as the catalog describes it. */
interface ColumnInfo {
  readonly name: string;
  readonly type: string;
  readonly collation: string | null;
}

/** PostgreSQL error classes a retry can outlive: connection exceptions, shutdown, resources. */
function isTransient(code: string | undefined): boolean {
  return code === undefined || /^(08|53|57P|58)/.test(code);
}

/**
 * Maps a driver error to a {@link DataSourceError}: refused credentials or privileges,
 * a missing database or table (configuration), a store that cannot be reached right now
 * (no SQLSTATE: a socket error, a timeout), or a failure of the statement.
 */
export function classifyPostgresError(e: unknown, what: string): DataSourceError {
  if (e instanceof DataSourceError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err.code === "string" ? err.code : undefined;
  const message = `${what}: ${typeof err.message === "string" ? err.message : String(e)}`;
  if (code === "28P01" || code === "28000" || code === "42501")
    return new DataSourceError("bad_credentials", message, { cause: e });
  if (code === "3D000" || code === "42P01" || code === "3F000")
    return new DataSourceError("invalid_config", message, { cause: e });
  // Node socket errors carry codes like ECONNREFUSED: not SQLSTATEs.
  if (code !== undefined && /^E[A-Z]+$/.test(code))
    return new DataSourceError("unreachable", message, { cause: e });
  if (isTransient(code)) return new DataSourceError("unreachable", message, { cause: e });
  return new DataSourceError("failed", message, { cause: e });
}

type IndexState = "ready" | "building" | "failed";

/**
 * The PostgreSQL data source: one table per group (see postgres-sql.ts for its shape and
 * statements), read per shard with keyset pagination over the shard index, written with
 * batched upserts.
 *
 * Reads are pulled: a page is fetched only when the consumer has taken the previous one
 * (with one page fetched ahead while it does), so a slow worker, whose HTTP/2 window stops
 * the server's writes, stops the database cursor too and memory stays at about two pages.
 * Resuming after `afterId` is the same keyset query. Credentials come from the replica's
 * environment or files and are read for each new connection (a rotated password works).
 *
 * @example
 * ```ts
 * const source = PostgresDataSource.create({ kind: "postgres", table: "items", ... }, { log });
 * await source.verify(); // a clear error now for bad credentials, not a hang later
 * for await (const r of source.read("g", 3, 8, { afterId: "", pageSize: 100, signal })) use(r);
 * await source.close();
 * ```
 */
export class PostgresDataSource implements DataSource, DataSink {
  readonly kind = "postgres";
  readonly config: PostgresSourceConfig;
  readonly #pool: pg.Pool;
  readonly #log: Logger | undefined;
  readonly #pageBytes: number;
  readonly #batchRecords: number;
  readonly #batchBytes: number;
  readonly #indexes = new Map<number, IndexState>();
  readonly #builds = new Set<Promise<void>>();
  readonly #stats: PostgresReadStats = { queries: 0, rowsFetched: 0, bytesFetched: 0 };
  readonly #onFetched: ((rows: number, bytes: number) => void) | undefined;
  readonly #connection: pg.PoolConfig;
  #tableReady: Promise<void> | undefined;
  /** The table was found in the right shape once: reads skip the catalog queries after that. */
  #verified = false;
  #closed: Promise<void> | undefined;

  private constructor(config: PostgresSourceConfig, options: PostgresDataSourceOptions) {
    this.config = config;
    this.#log = options.log;
    this.#onFetched = options.onFetched;
    this.#pageBytes = options.pageBytes ?? 1 << 20;
    this.#batchRecords = options.batchRecords ?? 500;
    this.#batchBytes = options.batchBytes ?? 4 << 20;
    this.#connection = connectionConfig(config, options.env ?? process.env);
    this.#pool = new pg.Pool({
      ...this.#connection,
      max: config.poolSize,
      idleTimeoutMillis: 30_000,
      query_timeout: options.queryTimeoutMs ?? 30_000,
    });
    // An idle connection the server closes (restart, idle timeout) is reported here; the
    // pool drops it and the next query opens a new one. Without a listener it would crash
    // the replica.
    this.#pool.on("error", (e) =>
      this.#log?.warn({ event: "data_source_connection_lost", table: config.table, err: e.message }),
    );
  }

  /** A source for `config` (no I/O until the first call). */
  static create(config: PostgresSourceConfig, options: PostgresDataSourceOptions = {}): PostgresDataSource {
    return new PostgresDataSource(config, options);
  }

  /** What every read so far fetched (a copy). */
  stats(): PostgresReadStats {
    return { ...this.#stats };
  }

  /**
   * Connects and checks the table: throws DataSourceError `bad_credentials` (refused
   * credentials, no privilege on the table), `invalid_config` (no such database, a table of
   * the wrong shape) or `unreachable`, within `connectTimeoutMs`. Resolves `false` when the
   * table does not exist yet (an upload creates it), `true` when it is ready.
   */
  async verify(): Promise<boolean> {
    if (this.#verified) return true;
    const columns = await this.#columns();
    if (columns.length === 0) return false;
    const problem = shapeProblem(columns);
    if (problem !== undefined)
      throw new DataSourceError(
        "invalid_config",
        `table ${this.config.table} ${problem} (see docs/data.md for the table a PostgreSQL source reads)`,
      );
    try {
      await this.#pool.query(`SELECT 1 FROM ${qualifiedTable(this.config.table)} LIMIT 0`);
    } catch (e) {
      throw classifyPostgresError(e, `table ${this.config.table}`);
    }
    this.#verified = true;
    return true;
  }

  async *read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord> {
    for await (const page of this.readPages(group, shardId, totalShards, options)) yield* page;
  }

  async *readPages(
    _group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<readonly ShardRecord[]> {
    if (!(await this.verify()))
      throw new DataSourceError(
        "invalid_config",
        `table ${this.config.table} does not exist: upload records (PutShardData, coordinator data load) to create it`,
      );
    const indexed = await this.#indexReady(totalShards);
    const sql = readPageSql(this.config.table, shardId, totalShards, { indexed });
    const maxPage = Math.max(1, Math.floor(options.pageSize));
    let largest = 64;
    const limit = () => Math.max(1, Math.min(maxPage, Math.floor(this.#pageBytes / largest)));
    const fetch = (after: string, n: number) => this.#page(sql, after, n);
    let n = limit();
    let next: Promise<ShardRecord[]> | undefined = fetch(options.afterId, n);
    next.catch(() => undefined);
    try {
      while (next !== undefined) {
        options.signal.throwIfAborted();
        const rows = await next;
        next = undefined;
        for (const r of rows) largest = Math.max(largest, r.id.length + r.payload.length);
        const last = rows[rows.length - 1];
        if (last !== undefined && rows.length === n) {
          // One page ahead while the consumer takes this one: never more.
          n = limit();
          next = fetch(last.id, n);
          // Marked handled now: it may fail while this generator waits at `yield` for the
          // consumer, and an unhandled rejection would end the process. `await next` above
          // still throws it.
          next.catch(() => undefined);
        }
        if (rows.length > 0) yield rows;
      }
    } finally {
      // An abandoned read must not leave a rejection unhandled.
      next?.catch(() => undefined);
    }
  }

  async #page(sql: string, after: string, limit: number): Promise<ShardRecord[]> {
    this.#stats.queries += 1;
    let res: pg.QueryResult<{ id: string; payload: Buffer }>;
    try {
      // Text results: bytea arrives hex-encoded and pg decodes it natively. (pg's binary
      // results are not an option: pg-protocol decodes every field as UTF-8 first, which
      // mangles payloads that are not valid UTF-8.)
      res = await this.#pool.query<{ id: string; payload: Buffer }>(sql, [after, limit]);
    } catch (e) {
      throw classifyPostgresError(e, `reading ${this.config.table}`);
    }
    let bytes = 0;
    for (const r of res.rows) bytes += r.id.length + r.payload.length;
    this.#stats.rowsFetched += res.rows.length;
    this.#stats.bytesFetched += bytes;
    this.#onFetched?.(res.rows.length, bytes);
    return res.rows;
  }

  /**
   * Upserts `records` in batches (no id twice in one statement: the last payload wins),
   * one statement in flight while the next batch fills, so order is kept and the stream is
   * read as fast as the database writes. Creates the table on first use.
   */
  async put(_group: string, records: AsyncIterable<ShardRecord>, options: PutOptions): Promise<PutResult> {
    await this.ensureTable(options.indexShardCounts ?? []);
    const result = { written: 0, unchanged: 0, batches: 0 };
    const sql = upsertSql(this.config.table);
    let inFlight: Promise<void> | undefined;
    const flush = async (batch: Map<string, Uint8Array>) => {
      const ids = [...batch.keys()];
      const payloads = ids.map((id) => Buffer.from(batch.get(id) as Uint8Array));
      let res: pg.QueryResult;
      try {
        res = await this.#pool.query(sql, [ids, payloads]);
      } catch (e) {
        throw classifyPostgresError(e, `writing ${this.config.table}`);
      }
      result.batches += 1;
      result.written += res.rowCount ?? 0;
      result.unchanged += ids.length - (res.rowCount ?? 0);
      options.onCommitted?.({ ...result });
    };
    let batch = new Map<string, Uint8Array>();
    let bytes = 0;
    try {
      for await (const r of records) {
        options.signal.throwIfAborted();
        batch.delete(r.id); // re-inserted last: the map keeps the last payload
        batch.set(r.id, r.payload);
        bytes += r.id.length + r.payload.length;
        if (batch.size >= this.#batchRecords || bytes >= this.#batchBytes) {
          await inFlight;
          inFlight = flush(batch);
          inFlight.catch(() => undefined);
          batch = new Map();
          bytes = 0;
        }
      }
      await inFlight;
      if (batch.size > 0) await flush(batch);
    } finally {
      await inFlight?.catch(() => undefined);
    }
    return result;
  }

  /**
   * Creates the hash function, the table and the shard indexes for `shardCounts` (plus the
   * config's `indexShardCounts`) when the table does not exist, under an advisory lock so
   * replicas racing to create it do not collide. Once per source.
   */
  ensureTable(shardCounts: readonly number[] = []): Promise<void> {
    this.#tableReady ??= (async () => {
      if (await this.verify()) return;
      const table = this.config.table;
      const { schema } = splitTableName(table);
      const counts = [...new Set([...this.config.indexShardCounts, ...shardCounts])].filter((t) => t > 1);
      const client = await this.#pool.connect().catch((e: unknown) => {
        throw classifyPostgresError(e, `creating ${table}`);
      });
      try {
        await client.query("BEGIN");
        await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`shard-data:${table}`]);
        await client.query(hashFunctionSql(schema));
        await client.query(createTableSql(table));
        for (const t of counts) await client.query(createShardIndexSql(table, t, false));
        await client.query("COMMIT");
        for (const t of counts) this.#indexes.set(t, "ready");
        this.#log?.info({ event: "data_table_created", table, shardIndexes: counts });
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw classifyPostgresError(e, `creating ${table}`);
      } finally {
        client.release();
      }
      if (!(await this.verify()))
        throw new DataSourceError("failed", `table ${table} is still missing after creating it`);
    })();
    const p = this.#tableReady;
    p.catch(() => {
      if (this.#tableReady === p) this.#tableReady = undefined;
    });
    return p;
  }

  /**
   * Whether the shard index for T is ready. When the catalog has none it starts building it
   * in the background (CREATE INDEX CONCURRENTLY: writes go on) when `autoIndex` is on, and
   * answers false: reads are right meanwhile, only slower (the primary key and a filter).
   */
  async #indexReady(totalShards: number): Promise<boolean> {
    if (totalShards <= 1) return false;
    const state = this.#indexes.get(totalShards);
    if (state === "ready") return true;
    if (state !== undefined) return false;
    if (await this.#indexValid(totalShards)) {
      this.#indexes.set(totalShards, "ready");
      return true;
    }
    this.#indexes.set(totalShards, "building");
    const build = this.#buildIndex(totalShards)
      .then((s) => {
        this.#indexes.set(totalShards, s);
      })
      .catch((e: unknown) => {
        this.#indexes.delete(totalShards); // try again on a later read
        this.#log?.warn({
          event: "data_index_failed",
          table: this.config.table,
          totalShards,
          err: e instanceof Error ? e.message : String(e),
        });
      });
    this.#builds.add(build);
    void build.finally(() => this.#builds.delete(build));
    return false;
  }

  /** True when a valid index named for T exists; false when none, undefined when an invalid one does. */
  async #indexValid(totalShards: number): Promise<boolean | undefined> {
    const { schema } = splitTableName(this.config.table);
    let res: pg.QueryResult<{ valid: boolean }>;
    try {
      res = await this.#pool.query<{ valid: boolean }>(
        `SELECT i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
        [schema, shardIndexName(this.config.table, totalShards)],
      );
    } catch (e) {
      throw classifyPostgresError(e, `reading ${this.config.table}`);
    }
    const row = res.rows[0];
    return row === undefined ? false : row.valid ? true : undefined;
  }

  async #buildIndex(totalShards: number): Promise<IndexState> {
    const table = this.config.table;
    const name = shardIndexName(table, totalShards);
    const { schema } = splitTableName(table);
    const valid = await this.#indexValid(totalShards);
    if (valid === true) return "ready";
    if (!this.config.autoIndex) {
      this.#log?.warn({
        event: "data_index_missing",
        table,
        totalShards,
        index: name,
        sql: createShardIndexSql(table, totalShards, true),
      });
      return "failed";
    }
    // Its own connection without the query timeout: a build takes as long as the table needs.
    const client = new pg.Client(this.#connection);
    client.on("error", () => undefined);
    await client.connect();
    try {
      const lock = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtext($1)) AS ok", [
        `shard-index:${schema}.${name}`,
      ]);
      if (lock.rows[0]?.ok !== true) return "building"; // another replica builds it
      const started = performance.now();
      this.#log?.info({ event: "data_index_building", table, totalShards, index: name });
      // A build that failed earlier leaves an invalid index behind that IF NOT EXISTS would keep.
      if (valid === undefined) await client.query(`DROP INDEX CONCURRENTLY IF EXISTS "${schema}"."${name}"`);
      await client.query(createShardIndexSql(table, totalShards, true));
      this.#log?.info({
        event: "data_index_built",
        table,
        totalShards,
        index: name,
        ms: Math.round(performance.now() - started),
      });
      return "ready";
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** The shard counts whose index this source knows to be ready (for tests and logs). */
  indexedShardCounts(): number[] {
    return [...this.#indexes].filter(([, s]) => s === "ready").map(([t]) => t);
  }

  /** Waits for index builds started so far (tests, benchmarks). */
  async settled(): Promise<void> {
    await Promise.all(this.#builds);
  }

  async #columns(): Promise<ColumnInfo[]> {
    const { schema, name } = splitTableName(this.config.table);
    try {
      const res = await this.#pool.query<ColumnInfo>(
        `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, co.collname AS collation
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped`,
        [schema, name],
      );
      return res.rows;
    } catch (e) {
      throw classifyPostgresError(e, `PostgreSQL ${describe(this.config)}`);
    }
  }

  /** Ends every connection (waiting for queries in flight); safe to call twice. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      await Promise.all(this.#builds);
      await this.#pool.end();
    })();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** What is wrong with a table's columns, or undefined when it can serve as a data table. */
function shapeProblem(columns: readonly ColumnInfo[]): string | undefined {
  const col = (name: string) => columns.find((c) => c.name === name);
  const id = col("id");
  const payload = col("payload");
  const key = col("shard_hash");
  if (id === undefined || id.type !== "text") return "has no text column id";
  if (id.collation !== "C") return `orders id by collation ${id.collation ?? "default"}, not "C" (bytewise)`;
  if (payload === undefined || payload.type !== "bytea") return "has no bytea column payload";
  if (key === undefined || key.type !== "numeric") return "has no numeric column shard_hash";
  return undefined;
}

function describe(config: PostgresSourceConfig): string {
  return config.urlEnv !== undefined
    ? `from $${config.urlEnv}`
    : `${config.user}@${config.host}:${config.port}/${config.database}`;
}

/** The driver's connection settings; the password is read when each connection opens. */
function connectionConfig(config: PostgresSourceConfig, env: NodeJS.ProcessEnv): pg.PoolConfig {
  const common: pg.PoolConfig = {
    connectionTimeoutMillis: config.connectTimeoutMs,
    keepAlive: true,
    application_name: "shard-coordinator",
    ...(config.ssl ? { ssl: true } : {}),
  };
  if (config.urlEnv !== undefined) {
    const url = env[config.urlEnv];
    if (url === undefined || url === "")
      return {
        ...common,
        password: () => {
          throw new DataSourceError(
            "bad_credentials",
            `environment variable ${config.urlEnv} (dataSource.urlEnv) is not set on this replica`,
          );
        },
      };
    return { ...common, connectionString: url };
  }
  const password = async (): Promise<string> => {
    if (config.passwordFile !== undefined) {
      try {
        return (await readFile(config.passwordFile, "utf8")).replace(/\r?\n$/, "");
      } catch (e) {
        throw new DataSourceError(
          "bad_credentials",
          `cannot read dataSource.passwordFile ${config.passwordFile}: ${(e as Error).message}`,
          { cause: e },
        );
      }
    }
    if (config.passwordEnv !== undefined) {
      const v = env[config.passwordEnv];
      if (v === undefined)
        throw new DataSourceError(
          "bad_credentials",
          `environment variable ${config.passwordEnv} (dataSource.passwordEnv) is not set on this replica`,
        );
      return v;
    }
    return "";
  };
  return {
    ...common,
    host: config.host,
    port: config.port,
    database: config.database,
    user: config.user,
    password,
  };
}
