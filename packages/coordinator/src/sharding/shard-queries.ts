import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Metadata, status } from "@grpc/grpc-js";
import {
  AssignmentPhase,
  type FetchShardDataRequest,
  type GetShardInfoRequest,
  type GetShardInfoResponse,
  GetShardInfoResponseSchema,
} from "@org/proto";
import type { Etcd3 } from "etcd3";
import { CoordinatorError } from "../errors.js";
import { checkName } from "../server/names.js";
import { StatusError } from "../server/shard-server.js";
import type { KeyLayout } from "../store/keys.js";
import {
  type AssignmentRecord,
  assignmentRecordSchema,
  type GroupConfig,
  groupConfigSchema,
  memberRecordSchema,
  parseRecord,
} from "../store/records.js";
import { primaryShard } from "./assignment.js";
import type { DataSource, ShardRecord } from "./data-source.js";
import { DataSourceError } from "./data-source-error.js";
import { shardLocations } from "./shard-location.js";

function validate(group: string, nodeId: string): void {
  const bad = checkName("group", group) ?? checkName("node_id", nodeId);
  if (bad !== undefined) throw new StatusError(status.INVALID_ARGUMENT, bad);
}

async function readAssignment(
  client: Etcd3,
  keys: KeyLayout,
  group: string,
): Promise<AssignmentRecord | undefined> {
  let raw: string | null;
  try {
    raw = await client.get(keys.assignment(group)).string();
  } catch (e) {
    throw new StatusError(
      status.UNAVAILABLE,
      `etcd unavailable: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (raw === null) return undefined;
  try {
    return parseRecord(assignmentRecordSchema, keys.assignment(group), raw);
  } catch (e) {
    throw new StatusError(status.INTERNAL, String(e));
  }
}

/** The group config, or undefined when it is missing or unreadable (no locations then). */
async function readGroupConfig(
  client: Etcd3,
  keys: KeyLayout,
  group: string,
): Promise<GroupConfig | undefined> {
  try {
    const raw = await client.get(keys.config(group)).string();
    return raw === null ? undefined : parseRecord(groupConfigSchema, keys.config(group), raw);
  } catch {
    return undefined;
  }
}

/**
 * GetShardInfo, answered from etcd so any replica (follower or leader) can serve it, with the
 * data location of each owned shard when the group's data lives outside the RM.
 */
export async function getShardInfo(
  client: Etcd3,
  keys: KeyLayout,
  req: GetShardInfoRequest,
): Promise<GetShardInfoResponse> {
  validate(req.group, req.nodeId);
  const [a, config] = await Promise.all([
    readAssignment(client, keys, req.group),
    readGroupConfig(client, keys, req.group),
  ]);
  if (a === undefined) return create(GetShardInfoResponseSchema, { shardId: -1 });
  const shards = a.owners[req.nodeId] ?? [];
  return create(GetShardInfoResponseSchema, {
    totalShards: a.totalShards,
    shardId: primaryShard(a.owners, req.nodeId),
    version: BigInt(a.version),
    shards: [...(a.owners[req.nodeId] ?? [])],
    phase: a.phase === "active" ? AssignmentPhase.ACTIVE : AssignmentPhase.PENDING,
    strategy: a.strategy,
    leaderEpoch: BigInt(a.leaderEpoch),
    locations: shardLocations(config, shards, a.totalShards),
  });
}

const ownershipRecheckMs = 500;

/**
 * FetchShardData: only the shard's owner in an active version, proving membership with its
 * session token, gets the records; ownership is re-checked while streaming, and a stream
 * whose shard moves away ends with FAILED_PRECONDITION.
 */
export async function fetchShardData(
  client: Etcd3,
  keys: KeyLayout,
  source: DataSource,
  req: FetchShardDataRequest,
  signal: AbortSignal,
  writePage: (page: readonly ShardRecord[]) => Promise<void> | undefined,
): Promise<void> {
  validate(req.group, req.nodeId);
  if (req.batchSize > 1000)
    throw new StatusError(status.INVALID_ARGUMENT, `batch_size ${req.batchSize} is above 1000`);
  const pageSize = req.batchSize === 0 ? 100 : req.batchSize;
  const check = async (): Promise<number> => {
    const a = await readAssignment(client, keys, req.group);
    const owned = a?.owners[req.nodeId] ?? [];
    if (a === undefined || a.phase !== "active" || !owned.includes(req.shardId)) {
      const md = new Metadata();
      md.set("x-shard-version", String(a?.version ?? 0));
      throw new StatusError(
        status.FAILED_PRECONDITION,
        `node ${req.nodeId} does not own shard ${req.shardId} of group ${req.group} in an active version (version ${a?.version ?? 0}, ${a?.phase ?? "none"})`,
        md,
      );
    }
    return a.totalShards;
  };
  const totalShards = await check();
  // The caller must be the member's live incarnation, and one that may run (not a new
  // incarnation waiting for an earlier one to stop, nor one that stopped for a restart).
  const checkMember = async (): Promise<void> => {
    const memberRaw = await client.get(keys.member(req.group, req.nodeId)).string();
    const member =
      memberRaw === null
        ? undefined
        : parseRecord(memberRecordSchema, keys.member(req.group, req.nodeId), memberRaw);
    const hash = createHash("sha256").update(req.sessionToken).digest("hex");
    if (member === undefined || req.sessionToken === "" || hash !== member.sessionHash) {
      throw new StatusError(
        status.PERMISSION_DENIED,
        `session token does not match member ${req.nodeId} of group ${req.group}`,
      );
    }
    if (member.state !== "active") {
      throw new StatusError(
        status.FAILED_PRECONDITION,
        `incarnation ${member.incarnation} of node ${req.nodeId} may not run its shards now (${member.state === "waiting" ? "an earlier incarnation may still be running" : "it stopped for a restart"})`,
      );
    }
  };
  await checkMember();
  let checkedAt = performance.now();
  const options = { afterId: req.afterId, pageSize, signal };
  // A page at a time where the source reads in pages: the page is written without an await
  // unless the stream pushes back (HTTP/2 flow control), and ownership is re-checked between
  // pages at most every 500 ms. How a page goes on the wire (a message per record, or a
  // DataPage) is the transport's business.
  const pages =
    source.readPages?.(req.group, req.shardId, totalShards, options) ??
    batches(source.read(req.group, req.shardId, totalShards, options), pageSize, pageBytes);
  try {
    for await (const page of pages) {
      if (performance.now() - checkedAt > ownershipRecheckMs) {
        const now = await check();
        if (now !== totalShards)
          throw new StatusError(status.FAILED_PRECONDITION, "the shard count changed; fetch again");
        await checkMember();
        checkedAt = performance.now();
      }
      const pending = writePage(page);
      if (pending !== undefined) await pending;
    }
  } catch (e) {
    throw dataSourceStatus(e);
  }
}

/** Bytes a page gathered from a record-at-a-time source may hold (a larger record goes alone). */
const pageBytes = 1 << 20;

/**
 * Pages of up to `size` records and about `maxBytes` from a source that yields one record at
 * a time (the etcd source reads ranges in pages underneath, so waiting for a page to fill
 * costs little latency and saves a write per record).
 */
async function* batches(
  items: AsyncIterable<ShardRecord>,
  size: number,
  maxBytes: number,
): AsyncIterable<readonly ShardRecord[]> {
  let page: ShardRecord[] = [];
  let bytes = 0;
  for await (const item of items) {
    page.push(item);
    bytes += item.id.length + item.payload.length;
    if (page.length >= size || bytes >= maxBytes) {
      yield page;
      page = [];
      bytes = 0;
    }
  }
  if (page.length > 0) yield page;
}

/**
 * The status a failed data call ends with: a bad layout record is INTERNAL (an operator
 * must fix it); a data source that is misconfigured or refuses the replica's credentials is
 * FAILED_PRECONDITION (an operator must fix the group config or the secret; retrying cannot
 * help); anything else from the source is UNAVAILABLE (retry; a read resumes with `after_id`).
 */
export function dataSourceStatus(e: unknown): StatusError {
  if (e instanceof StatusError) return e;
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof CoordinatorError && e.code === "invalid_data")
    return new StatusError(status.INTERNAL, `data of this group is unreadable: ${message}`);
  // `x-shard-data-error` tells a data source's failure apart from a lost shard (which is
  // FAILED_PRECONDITION too, with `x-shard-version`).
  const md = new Metadata();
  if (e instanceof CoordinatorError && e.code === "invalid_config") {
    md.set("x-shard-data-error", "invalid_config");
    return new StatusError(status.FAILED_PRECONDITION, message, md);
  }
  if (e instanceof DataSourceError) md.set("x-shard-data-error", e.code);
  if (e instanceof DataSourceError && (e.code === "invalid_config" || e.code === "bad_credentials"))
    return new StatusError(status.FAILED_PRECONDITION, message, md);
  return new StatusError(status.UNAVAILABLE, `data source failed: ${message}`, md);
}
