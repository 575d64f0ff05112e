import type { ShardDataLocation } from "@org/proto";

/**
 * Where one shard's records live in PostgreSQL (the coordinator's `postgres` data source),
 * for a job that reads its shard straight from the database instead of through
 * `fetchShardData`. The shape is stable (docs/data.md); it never carries credentials.
 */
export interface PostgresShardLocation {
  readonly version: 1;
  readonly kind: "postgres";
  /** Where to connect; null when the coordinators take a URL from `urlEnv`. */
  readonly host: string | null;
  readonly port: number | null;
  readonly database: string | null;
  readonly urlEnv: string | null;
  readonly ssl: boolean;
  /** `"schema"."table"`, quoted for SQL. */
  readonly table: string;
  readonly idColumn: string;
  readonly payloadColumn: string;
  readonly keyColumn: string;
  readonly shard: number;
  readonly totalShards: number;
  /** SQL selecting exactly this shard's rows, e.g. `(shard_hash % 8) = 3`. */
  readonly predicate: string;
  /** A keyset page: `$1` the last id read ("" to start), `$2` the page size; uses the shard index. */
  readonly query: string;
}

/** A data location the SDK understands (more kinds may come). */
export type ShardLocation = PostgresShardLocation;

const isString = (v: unknown): v is string => typeof v === "string";
const isNullableString = (v: unknown): v is string | null => v === null || typeof v === "string";
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;

/**
 * Parses a ShardDataLocation from GetShardInfo or an assignment; undefined for a kind or
 * version this SDK does not know, or a malformed descriptor (the coordinator is newer or
 * broken: read through `fetchShardData` then).
 *
 * @example
 * ```ts
 * const loc = parseShardLocation(info.locations[0]);
 * if (loc?.kind === "postgres") await pgClient.query(loc.query, ["", 500]);
 * ```
 */
export function parseShardLocation(location: ShardDataLocation): ShardLocation | undefined {
  if (location.kind !== "postgres") return undefined;
  let d: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(location.descriptorJson);
    if (typeof parsed !== "object" || parsed === null) return undefined;
    d = parsed as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (
    d.version !== 1 ||
    d.kind !== "postgres" ||
    !isNullableString(d.host) ||
    !(d.port === null || isInt(d.port)) ||
    !isNullableString(d.database) ||
    !isNullableString(d.urlEnv) ||
    typeof d.ssl !== "boolean" ||
    !isString(d.table) ||
    !isString(d.idColumn) ||
    !isString(d.payloadColumn) ||
    !isString(d.keyColumn) ||
    !isInt(d.shard) ||
    !isInt(d.totalShards) ||
    d.shard !== location.shardId ||
    !isString(d.predicate) ||
    !isString(d.query)
  )
    return undefined;
  return d as unknown as PostgresShardLocation;
}

/**
 * The locations of a worker's shards as the coordinator last announced them (an assignment
 * or GetShardInfo). `update()` replaces them all; `get()` finds one shard's.
 *
 * @example
 * ```ts
 * const locations = new ShardLocations();
 * locations.update(assignment.locations);
 * locations.get(3)?.query;
 * ```
 */
export class ShardLocations {
  #byShard = new Map<number, ShardLocation>();

  /** Replaces every location with these (unknown kinds are skipped). */
  update(locations: readonly ShardDataLocation[]): void {
    const next = new Map<number, ShardLocation>();
    for (const l of locations) {
      const parsed = parseShardLocation(l);
      if (parsed !== undefined) next.set(l.shardId, parsed);
    }
    this.#byShard = next;
  }

  /** The location of `shard`, or undefined (not owned, or data served only through the RM). */
  get(shard: number | { readonly id: number }): ShardLocation | undefined {
    return this.#byShard.get(typeof shard === "number" ? shard : shard.id);
  }
}
