import { z } from "zod";
import { DataSourceError } from "./data-source-error.js";

// The `dataSource` field of a group config (`<ns>/groups/<g>/config`), validated here rather
// than in the group config schema: a bad data source must fail the group's data calls with a
// clear status, never disturb its membership (records.ts keeps the field loosely typed).

/** An SQL identifier we create and quote: letters, digits and `_`, not starting with a digit. */
const identifier = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
/** `table` or `schema.table`. */
const tableName = /^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The built-in source: records under `<ns>-data/<group>/` in the coordinator's etcd. */
export const etcdSourceConfigSchema = z.strictObject({ kind: z.literal("etcd") });

/**
 * A PostgreSQL table holding the group's records (see docs/data.md for its DDL). Credentials
 * never live in etcd: the password comes from a file or an environment variable of the
 * replica (`passwordFile`, `passwordEnv`), or the whole connection string from a variable
 * (`urlEnv`).
 */
export const postgresSourceConfigSchema = z.strictObject({
  kind: z.literal("postgres"),
  /** `table` or `schema.table`; created by the first upload when missing. */
  table: z.string().regex(tableName, "must be an SQL identifier, optionally schema-qualified"),
  /** @default "127.0.0.1" */
  host: z.string().min(1).default("127.0.0.1"),
  /** @default 5432 */
  port: z.number().int().min(1).max(65_535).default(5432),
  /** @default "postgres" */
  database: z.string().min(1).default("postgres"),
  /** @default "postgres" */
  user: z.string().min(1).default("postgres"),
  /** A file on each replica holding the password (read for each new connection: rotatable). */
  passwordFile: z.string().min(1).optional(),
  /** An environment variable of each replica holding the password. */
  passwordEnv: z.string().regex(envName).optional(),
  /** An environment variable holding a `postgres://` URL; it overrides host, port, database, user and password. */
  urlEnv: z.string().regex(envName).optional(),
  /** Require TLS to the database. @default false */
  ssl: z.boolean().default(false),
  /** Connections per replica. @default 8 */
  poolSize: z.number().int().min(1).max(100).default(8),
  /** How long a connection attempt may take, in ms. @default 5000 */
  connectTimeoutMs: z.number().int().min(100).max(60_000).default(5000),
  /**
   * Shard counts to build the shard index for when the table is created; a read for another
   * shard count builds its index (CREATE INDEX CONCURRENTLY) when `autoIndex` is on.
   * @default [] (a sticky group's shard count is added by the caller)
   */
  indexShardCounts: z.array(z.number().int().min(1).max(65_536)).max(64).default([]),
  /** Build a missing shard index in the background the first time a shard count is read. @default true */
  autoIndex: z.boolean().default(true),
});

export const dataSourceConfigSchema = z.discriminatedUnion("kind", [
  etcdSourceConfigSchema,
  postgresSourceConfigSchema,
]);
export type EtcdSourceConfig = z.infer<typeof etcdSourceConfigSchema>;
export type PostgresSourceConfig = z.infer<typeof postgresSourceConfigSchema>;
export type DataSourceConfig = z.infer<typeof dataSourceConfigSchema>;

/** Keys that would put a secret in etcd in clear; refused with a message saying what to use. */
const secretKeys = ["password", "url", "connectionString"];

/**
 * Validates a group config's `dataSource` (absent: the built-in etcd source). Throws
 * DataSourceError("invalid_config") naming the group and the first problem.
 *
 * @example
 * ```ts
 * parseDataSourceConfig("billing", { kind: "postgres", table: "billing_items", passwordEnv: "PG_PASSWORD" });
 * ```
 */
export function parseDataSourceConfig(group: string, raw: unknown): DataSourceConfig {
  if (raw === undefined || raw === null) return { kind: "etcd" };
  if (typeof raw === "object" && !Array.isArray(raw)) {
    const secret = secretKeys.find((k) => Object.hasOwn(raw, k));
    if (secret !== undefined)
      throw new DataSourceError(
        "invalid_config",
        `group ${group}: dataSource.${secret} would keep a secret in etcd in clear; use passwordFile, passwordEnv or urlEnv (read on each replica)`,
      );
  }
  const r = dataSourceConfigSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const path = issue?.path.join(".") ?? "";
    throw new DataSourceError(
      "invalid_config",
      `group ${group}: dataSource${path === "" ? "" : `.${path}`}: ${issue?.message ?? "invalid"}`,
    );
  }
  return r.data;
}

/** Splits `schema.table` (schema defaults to `public`). */
export function splitTableName(table: string): { schema: string; name: string } {
  const dot = table.indexOf(".");
  return dot < 0
    ? { schema: "public", name: table }
    : { schema: table.slice(0, dot), name: table.slice(dot + 1) };
}

/** True for an identifier {@link quoteIdent} may quote (checked again where SQL is built). */
export function isIdentifier(s: string): boolean {
  return identifier.test(s);
}
