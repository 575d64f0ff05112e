import { create } from "@bufbuild/protobuf";
import { type ShardDataLocation, ShardDataLocationSchema } from "@org/proto";
import { type DataSourceConfig, parseDataSourceConfig } from "./data-source-config.js";
import { pgColumns, qualifiedTable, readPageSql, shardPredicate } from "./postgres-sql.js";

/**
 * Where a shard's records live in PostgreSQL: the `descriptor_json` of a ShardDataLocation of
 * kind "postgres", version 1. Stable: fields are only ever added, and a change of meaning
 * gets a new `version`. Credentials are never in it; the job brings its own.
 */
export interface PostgresShardLocation {
  readonly version: 1;
  readonly kind: "postgres";
  /** Where to connect; null when the replicas take a URL from `urlEnv`. */
  readonly host: string | null;
  readonly port: number | null;
  readonly database: string | null;
  /** The replicas' connection URL variable, when they use one (the job may use the same). */
  readonly urlEnv: string | null;
  readonly ssl: boolean;
  /** `"schema"."table"`, quoted, ready for SQL. */
  readonly table: string;
  readonly idColumn: "id";
  readonly payloadColumn: "payload";
  /** The stored shardOf hash h: the shard of a row is h mod totalShards. */
  readonly keyColumn: "shard_hash";
  readonly shard: number;
  readonly totalShards: number;
  /** SQL selecting exactly this shard's rows, e.g. `(shard_hash % 8) = 3`. */
  readonly predicate: string;
  /**
   * A keyset page of the shard, `$1` the last id read ("" to start), `$2` the page size, in
   * the form that makes PostgreSQL use the shard index for T (which must exist: the RM builds
   * it the first time it serves T; see docs/data.md).
   */
  readonly query: string;
}

/**
 * The location of shard `shard` of `totalShards` under a group config, for jobs that read
 * their shard straight from the store (GetShardInfo and the assignment view carry one per
 * owned shard). Undefined for the built-in etcd source (read it through FetchShardData) and
 * for a config whose `dataSource` is invalid. Pure: the same config gives the same JSON.
 *
 * @example
 * ```ts
 * const loc = shardLocation({ dataSource: { kind: "postgres", table: "items" } }, 3, 8);
 * JSON.parse(loc!.descriptorJson).predicate; // "(shard_hash % 8) = 3"
 * ```
 */
export function shardLocation(
  config: { readonly dataSource?: unknown } | undefined,
  shard: number,
  totalShards: number,
): ShardDataLocation | undefined {
  let source: DataSourceConfig;
  try {
    source = parseDataSourceConfig("-", config?.dataSource);
  } catch {
    return undefined;
  }
  if (source.kind !== "postgres") return undefined;
  if (!Number.isInteger(shard) || shard < 0 || shard >= totalShards) return undefined;
  const viaUrl = source.urlEnv !== undefined;
  const descriptor: PostgresShardLocation = {
    version: 1,
    kind: "postgres",
    host: viaUrl ? null : source.host,
    port: viaUrl ? null : source.port,
    database: viaUrl ? null : source.database,
    urlEnv: source.urlEnv ?? null,
    ssl: source.ssl,
    table: qualifiedTable(source.table),
    idColumn: pgColumns.id,
    payloadColumn: pgColumns.payload,
    keyColumn: pgColumns.key,
    shard,
    totalShards,
    predicate: shardPredicate(shard, totalShards),
    query: readPageSql(source.table, shard, totalShards, { indexed: true }),
  };
  return create(ShardDataLocationSchema, {
    shardId: shard,
    kind: "postgres",
    descriptorJson: JSON.stringify(descriptor),
  });
}

/**
 * {@link shardLocation} for each of `shards` that has one, in order: what an assignment view
 * or GetShardInfo carries.
 */
export function shardLocations(
  config: { readonly dataSource?: unknown } | undefined,
  shards: readonly number[],
  totalShards: number,
): ShardDataLocation[] {
  const out: ShardDataLocation[] = [];
  for (const s of shards) {
    const loc = shardLocation(config, s, totalShards);
    if (loc !== undefined) out.push(loc);
  }
  return out;
}
