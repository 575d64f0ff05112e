import { z } from "zod";
import { CoordinatorError } from "../errors.js";
import { strategyNames } from "../sharding/assignment.js";

// The JSON documents the coordinator keeps in etcd. Everything read back is validated:
// an operator may edit these keys with etcdctl, and a bad edit must give a clear error,
// not a crash deep inside the leader.

const shardList = z.array(z.number().int().nonnegative());

/** `<ns>/groups/<group>/members/<nodeId>`, bound to the member's own lease. */
export const memberRecordSchema = z.object({
  nodeId: z.string(),
  group: z.string(),
  labels: z.record(z.string(), z.string()),
  capacity: z.number().int().positive(),
  /** ISO time of the first join of this membership. */
  joinedAt: z.string(),
  /** The replica that admitted the member. */
  replica: z.string(),
  /** sha256 of the session token (the token itself never touches etcd). */
  sessionHash: z.string(),
  /**
   * The incarnation holding the membership: 1 for the first process under this node id, one
   * more each time a Hello without the live session token starts a new one.
   */
  incarnation: z.number().int().nonnegative().default(1),
  /**
   * `active`: the incarnation may run its shards. `waiting`: a new incarnation that may start
   * nothing yet, because an earlier one may still be running (a new leader waits one session
   * timeout from its takeover). `released`: it stopped everything for a planned restart and
   * keeps the membership for the restart grace.
   */
  state: z.enum(["active", "waiting", "released"]).default("active"),
});
export type MemberRecord = z.infer<typeof memberRecordSchema>;

/** `<ns>/groups/<group>/assignment` (no lease: it outlives every replica). */
export const assignmentRecordSchema = z.object({
  version: z.number().int().nonnegative(),
  phase: z.enum(["pending", "active"]),
  totalShards: z.number().int().nonnegative(),
  strategy: z.enum(strategyNames as unknown as ["modulo", "sticky"]),
  /** nodeId -> ascending shard ids. */
  owners: z.record(z.string(), shardList),
  /** While pending: members that must still Release (or be expelled) before it activates. */
  awaitingRelease: z.array(z.string()).default([]),
  /** The owners of the previous active version, kept while pending (who may still be running what). */
  previousOwners: z.record(z.string(), shardList).default({}),
  previousTotalShards: z.number().int().nonnegative().default(0),
  /**
   * While pending: the version must also outwait the self-fence of incarnations that cannot
   * release (expelled while alive, superseded, gone with their lease). The writer's estimate
   * of when that is, as an ISO time, for operators; a new leader does not trust clocks and
   * waits one session timeout from its takeover instead.
   */
  fencesUntil: z.string().optional(),
  leaderEpoch: z.number().int().nonnegative(),
  updatedAt: z.string(),
});
export type AssignmentRecord = z.infer<typeof assignmentRecordSchema>;

/** `<ns>/groups/<group>/config`, optional, written by operators. */
export const groupConfigSchema = z.object({
  strategy: z.enum(strategyNames as unknown as ["modulo", "sticky"]).optional(),
  shards: z.number().int().min(1).max(65_536).optional(),
  /**
   * Where the group's records live (FetchShardData, PutShardData): absent for the built-in
   * etcd source, else e.g. `{"kind":"postgres","table":"items","passwordEnv":"PG_PASSWORD"}`.
   * Validated by sharding/data-source-config.ts when a data call uses it, not here: a bad data
   * source fails the group's data calls, never its membership.
   */
  dataSource: z.unknown().optional(),
});
export type GroupConfig = z.infer<typeof groupConfigSchema>;

/**
 * `<ns>/groups/<group>/control`, operator switches written through the CLI. Unknown fields
 * are kept (later switches: pause, drain).
 */
export const groupControlSchema = z
  .object({
    /** `coordinator repair`: a fresh, higher version from live members, everyone releasing first. */
    repair: z.object({ id: z.string().min(1), requestedAt: z.string() }).optional(),
    /** `coordinator group pause`: no new versions and no task dispatch; shards keep running. */
    paused: z.boolean().optional(),
    /** `coordinator drain`: these nodes take no new tasks and their shards move away. */
    drained: z.array(z.string()).optional(),
    /** `coordinator capacity`: per-node capacity (sticky weight and task slots), over the worker's own. */
    capacity: z.record(z.string(), z.number().int().min(0).max(1_000_000)).optional(),
  })
  .passthrough();
export type GroupControl = z.infer<typeof groupControlSchema>;

/**
 * `<ns>/config`: the settings safety depends on, the same for every replica. Written by the
 * first replica that finds none (from its flags) and by `coordinator config set`.
 */
export const clusterSettingsSchema = z.object({
  sessionTimeoutMs: z.number().int().min(100).max(3_600_000),
  heartbeatIntervalMs: z.number().int().min(50).max(600_000),
  strategy: z.enum(strategyNames as unknown as ["modulo", "sticky"]),
  shards: z.number().int().min(1).max(65_536),
  updatedAt: z.string(),
  /** Who wrote it: a replica id, or "cli". */
  updatedBy: z.string(),
  /**
   * The values before the last change. A shorter session timeout applies to expiry only one
   * old session timeout after the change (workers learn the new value from acks first).
   */
  previous: z
    .object({
      sessionTimeoutMs: z.number().int().positive(),
      heartbeatIntervalMs: z.number().int().positive(),
    })
    .optional(),
});
export type ClusterSettings = z.infer<typeof clusterSettingsSchema>;

/** Parses a JSON document read from `key`, or throws CoordinatorError("invalid_data") naming the key. */
export function parseRecord<T>(schema: z.ZodType<T>, key: string, raw: string): T {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new CoordinatorError("invalid_data", `${key} is not JSON`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new CoordinatorError(
      "invalid_data",
      `${key}: ${issue?.path.join(".") ?? ""} ${issue?.message ?? "invalid"}`,
    );
  }
  return r.data;
}
