import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ShardService } from "@org/proto";
import { WorkerError } from "./errors.js";
import { ShardLocations } from "./shard-location.js";
import { authFailure } from "./stream-failure.js";
import { resolveTransportSecurity, type TransportSecurityOptions } from "./transport-security.js";

/** Options of {@link getShardLocations}. */
export interface GetShardLocationsOptions extends TransportSecurityOptions {
  /** Coordinator addresses; any replica answers (from etcd). Tried in order. */
  readonly coordinators: readonly string[];
  readonly group: string;
  readonly nodeId: string;
  readonly signal?: AbortSignal;
}

/** A node's shards and where their records live, as GetShardInfo reports them. */
export interface ShardLocationsInfo {
  readonly version: number;
  readonly totalShards: number;
  readonly shards: readonly number[];
  readonly locations: ShardLocations;
}

/**
 * Asks any coordinator (GetShardInfo) which shards `nodeId` owns and where each one's records
 * live, for jobs that read their shard straight from the database. `locations.get(shard)` is
 * undefined when the group's data is served only through the RM (the etcd source).
 *
 * @example
 * ```ts
 * const info = await getShardLocations({ coordinators, group: "billing", nodeId: "billing-7" });
 * const loc = info.locations.get(info.shards[0] ?? -1);
 * if (loc !== undefined) for (const row of (await db.query(loc.query, ["", 500])).rows) use(row);
 * ```
 */
export async function getShardLocations(options: GetShardLocationsOptions): Promise<ShardLocationsInfo> {
  let last: unknown;
  const security = resolveTransportSecurity(options);
  for (const target of options.coordinators) {
    const baseUrl = `${security.scheme}://${target}`;
    const manager = new Http2SessionManager(baseUrl, undefined, security.sessionOptions);
    try {
      const client = createClient(
        ShardService,
        createGrpcTransport({ baseUrl, sessionManager: manager, interceptors: security.interceptors }),
      );
      const res = await client.getShardInfo(
        { group: options.group, nodeId: options.nodeId },
        options.signal === undefined ? {} : { signal: options.signal },
      );
      const locations = new ShardLocations();
      locations.update(res.locations);
      return {
        version: Number(res.version),
        totalShards: res.totalShards,
        shards: [...res.shards],
        locations,
      };
    } catch (e) {
      last = e;
      const ce = ConnectError.from(e);
      const refused = authFailure(ce);
      if (refused !== undefined) throw refused;
      if (ce.code !== Code.Unavailable && ce.code !== Code.ResourceExhausted)
        throw new WorkerError(
          ce.code === Code.InvalidArgument ? "invalid_options" : "unavailable",
          ce.rawMessage,
          {
            cause: ce,
          },
        );
    } finally {
      manager.abort();
    }
  }
  throw WorkerError.from(last ?? new Error("no coordinator given"));
}
