/**
 * Why a data source could not serve a call, as a stable code.
 *
 * - `invalid_config`: the group's `dataSource` config is malformed, names a database or table
 *   that does not exist, or asks for something the source cannot do.
 * - `bad_credentials`: the store refused the credentials (wrong password, unknown user, no
 *   access to the table), or the credentials file or variable is missing.
 * - `unreachable`: the store did not answer (refused connection, timeout, restart under way):
 *   a retry may succeed.
 * - `failed`: the store answered with an error for this call (a retry may or may not help).
 */
export type DataSourceErrorCode = "invalid_config" | "bad_credentials" | "unreachable" | "failed";

/**
 * The error of a data source (PostgreSQL, etcd): a code, a message naming the group and the
 * store, and the driver's error as `cause`.
 *
 * @example
 * ```ts
 * try { await source.verify(); }
 * catch (e) { if (DataSourceError.from(e).code === "bad_credentials") alertOperator(e); }
 * ```
 */
export class DataSourceError extends Error {
  override name = "DataSourceError";
  readonly code: DataSourceErrorCode;

  constructor(code: DataSourceErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Wraps anything thrown, keeping a DataSourceError as it is. */
  static from(reason: unknown, code: DataSourceErrorCode = "failed"): DataSourceError {
    if (reason instanceof DataSourceError) return reason;
    return new DataSourceError(code, reason instanceof Error ? reason.message : String(reason), {
      cause: reason,
    });
  }
}
