import { isIdentifier, splitTableName } from "./data-source-config.js";

// The SQL of the PostgreSQL data source, built from validated identifiers and integers only
// (never from record data: ids and payloads always travel as parameters). Pure, so the
// statements the docs show are the ones the tests check.
//
// The table: `id text COLLATE "C" PRIMARY KEY` (bytewise order, as the etcd source and the
// cursor `after_id` use), `payload bytea`, and `shard_hash numeric`, generated from the id by
// `shard_hash(id)`, the SDK's shardOf hash h (the id itself when it is 1-30 decimal digits,
// else its 32-bit FNV-1a): shardOf(id, T) = h mod T for every T. A read of shard s of T is
// `WHERE (shard_hash % T) = s AND id > $1 ORDER BY id LIMIT $2`; an expression index on
// `((shard_hash % T), id)` turns it into one index range scan, in order, for that T (one
// index per shard count in use: sticky groups have one, modulo groups one per member count
// seen; a read without its index is still right, scanning the primary key instead).

/** Column names of a data table (fixed: the location descriptor names them too). */
export const pgColumns = { id: "id", payload: "payload", key: "shard_hash" } as const;

/** Longest id accepted (bytes of UTF-8): well inside a btree entry with the shard key. */
export const maxIdBytes = 512;

/** `"name"`, for an identifier already validated; throws on anything else. */
export function quoteIdent(name: string): string {
  if (!isIdentifier(name)) throw new RangeError(`not an SQL identifier: ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** `"schema"."table"`. */
export function qualifiedTable(table: string): string {
  const { schema, name } = splitTableName(table);
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** The shard index's name for T: `<table>_shard<T>_idx`, cut to PostgreSQL's 63 bytes. */
export function shardIndexName(table: string, totalShards: number): string {
  const suffix = `_shard${totalShards}_idx`;
  return `${splitTableName(table).name.slice(0, 63 - suffix.length)}${suffix}`;
}

/**
 * `shard_hash(id)`: the SDK's shardOf hash as SQL, IMMUTABLE so a generated column and
 * expression indexes may use it. FNV-1a stays below 2^32 before each multiply, so the
 * product (< 2^57) fits a bigint.
 */
export function hashFunctionSql(schema: string): string {
  return `CREATE OR REPLACE FUNCTION ${quoteIdent(schema)}.shard_hash(id text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  b bytea;
  h bigint := 2166136261;
BEGIN
  IF id ~ '^[0-9]{1,30}$' THEN
    RETURN id::numeric;
  END IF;
  b := convert_to(id, 'UTF8');
  FOR i IN 0 .. length(b) - 1 LOOP
    h := ((h # get_byte(b, i)) * 16777619) % 4294967296;
  END LOOP;
  RETURN h;
END
$fn$`;
}

/** The data table, with the generated shard key. */
export function createTableSql(table: string): string {
  const { schema } = splitTableName(table);
  return `CREATE TABLE IF NOT EXISTS ${qualifiedTable(table)} (
  id text COLLATE "C" PRIMARY KEY,
  payload bytea NOT NULL,
  shard_hash numeric GENERATED ALWAYS AS (${quoteIdent(schema)}.shard_hash(id)) STORED
)`;
}

/** The expression index that makes a read of shard s of T one range scan in id order. */
export function createShardIndexSql(table: string, totalShards: number, concurrently: boolean): string {
  checkShardCount(totalShards);
  const name = quoteIdent(shardIndexName(table, totalShards));
  return `CREATE INDEX ${concurrently ? "CONCURRENTLY " : ""}IF NOT EXISTS ${name} ON ${qualifiedTable(
    table,
  )} ((shard_hash % ${totalShards}), id)`;
}

function checkShardCount(totalShards: number): void {
  if (!Number.isInteger(totalShards) || totalShards < 1 || totalShards > 65_536)
    throw new RangeError(`shard count ${totalShards} is not an integer in 1..65536`);
}

/**
 * The predicate selecting shard `shardId` of `totalShards`, as it appears in reads and in the
 * location descriptor (`true` for a single shard).
 *
 * @example
 * ```ts
 * shardPredicate(3, 8); // "(shard_hash % 8) = 3"
 * ```
 */
export function shardPredicate(shardId: number, totalShards: number): string {
  checkShardCount(totalShards);
  if (!Number.isInteger(shardId) || shardId < 0 || shardId >= totalShards)
    throw new RangeError(`shard ${shardId} of ${totalShards} does not exist`);
  return totalShards === 1 ? "true" : `(shard_hash % ${totalShards}) = ${shardId}`;
}

/**
 * One keyset page of a shard: `$1` the last id already read ("" from the start), `$2` the
 * page size. Ordered by id in bytewise order (the column's "C" collation).
 *
 * With `indexed` (the shard index for T exists) the page is asked as a range of that index,
 * `((shard_hash % T), id) > (s, $1) AND (shard_hash % T) <= s`, ordered by the index key: only
 * that index can answer it, with one range scan that reads the page's rows and nothing else.
 * The plain form `(shard_hash % T) = s AND id > $1 ORDER BY id` returns the same rows, but
 * PostgreSQL may prefer to walk the primary key and filter (it costs the primary key's heap
 * order as cheaper), reading T rows for each one it keeps; without the shard index that is
 * the best plan there is, so it is what a read uses until the index exists.
 */
export function readPageSql(
  table: string,
  shardId: number,
  totalShards: number,
  options: { readonly indexed?: boolean } = {},
): string {
  const predicate = shardPredicate(shardId, totalShards);
  const from = `SELECT id, payload FROM ${qualifiedTable(table)}`;
  if (totalShards === 1) return `${from} WHERE id > $1 ORDER BY id LIMIT $2`;
  if (options.indexed !== true) return `${from} WHERE ${predicate} AND id > $1 ORDER BY id LIMIT $2`;
  const key = `(shard_hash % ${totalShards})`;
  return `${from} WHERE (${key}, id) > (${shardId}, $1) AND ${key} <= ${shardId} ORDER BY ${key}, id LIMIT $2`;
}

/**
 * A batch upsert: `$1` ids, `$2` payloads (no id twice in one batch). Rows come back only for
 * new ids (`inserted` true) and changed payloads; an id stored with the same payload is left
 * as it is (no write, no dead tuple).
 */
export function upsertSql(table: string): string {
  return `INSERT INTO ${qualifiedTable(table)} AS t (id, payload)
SELECT * FROM unnest($1::text[], $2::bytea[])
ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload
WHERE t.payload IS DISTINCT FROM EXCLUDED.payload
RETURNING (xmax = 0) AS inserted`;
}
