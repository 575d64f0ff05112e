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
  leaderEpoch: z.number().int().nonnegative(),
  updatedAt: z.string(),
});
export type AssignmentRecord = z.infer<typeof assignmentRecordSchema>;

/** `<ns>/groups/<group>/config`, optional, written by operators. */
export const groupConfigSchema = z.object({
  strategy: z.enum(strategyNames as unknown as ["modulo", "sticky"]).optional(),
  shards: z.number().int().min(1).max(65_536).optional(),
});
export type GroupConfig = z.infer<typeof groupConfigSchema>;

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
