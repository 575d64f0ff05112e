import { randomBytes } from "node:crypto";
import type { Etcd3 } from "etcd3";
import { CoordinatorError } from "../errors.js";
import type { StrategyName } from "../sharding/assignment.js";
import type { KeyLayout } from "../store/keys.js";
import {
  type ClusterSettings,
  clusterSettingsSchema,
  type GroupControl,
  groupControlSchema,
  parseRecord,
} from "../store/records.js";

/**
 * Reads a JSON record, lets `change` produce the next one, and writes it only if nobody wrote
 * the key meanwhile (compare-and-swap on its mod revision); retries a few times on conflict.
 */
async function updateRecord<T>(
  client: Etcd3,
  key: string,
  parse: (raw: string | undefined) => T,
  change: (current: T) => T,
): Promise<T> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await client.get(key).exec();
    const kv = res.kvs[0];
    const next = change(parse(kv?.value.toString()));
    const txn = await client
      .if(key, "Mod", "==", kv === undefined ? 0 : Number(kv.mod_revision))
      .then(client.put(key).value(JSON.stringify(next)))
      .commit();
    if (txn.succeeded) return next;
  }
  throw new CoordinatorError("etcd_unavailable", `${key} kept changing under us; try again`);
}

/**
 * `coordinator repair --group g`: asks the leader for a fresh version, higher than any a
 * worker or record has shown, from the live members, every one of them releasing first
 * (ownership is treated as unknown). The way out of a corrupt assignment record, and the
 * thing to do after restoring etcd from a backup. Resolves with the version the leader wrote.
 */
export async function requestRepair(
  client: Etcd3,
  keys: KeyLayout,
  group: string,
  timeoutMs: number,
): Promise<{ id: string; version: number; phase: string }> {
  const id = `${new Date().toISOString()}-${randomBytes(3).toString("hex")}`;
  const before = await client.get(keys.assignment(group)).exec();
  const beforeRevision = Number(before.kvs[0]?.mod_revision ?? 0);
  await updateRecord<GroupControl>(
    client,
    keys.control(group),
    (raw) => (raw === undefined ? {} : parseControlLenient(keys.control(group), raw)),
    (c) => ({ ...c, repair: { id, requestedAt: new Date().toISOString() } }),
  );
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const res = await client.get(keys.assignment(group)).exec();
    const kv = res.kvs[0];
    if (kv !== undefined && Number(kv.mod_revision) > beforeRevision) {
      try {
        const v = JSON.parse(kv.value.toString()) as { version?: unknown; phase?: unknown };
        if (typeof v.version === "number") return { id, version: v.version, phase: String(v.phase) };
      } catch {
        // someone wrote garbage again; keep waiting for the leader's record
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new CoordinatorError(
    "etcd_unavailable",
    `repair ${id} requested, but no new version of group ${group} within ${timeoutMs} ms (is a leader running? see its log for repair_requested)`,
  );
}

function parseControlLenient(key: string, raw: string): GroupControl {
  try {
    return parseRecord(groupControlSchema, key, raw);
  } catch {
    // A repair must also work when the control record itself is what went bad.
    return {};
  }
}

/** What `coordinator config set` may change. */
export interface SettingsChange {
  readonly sessionTimeoutMs?: number;
  readonly heartbeatIntervalMs?: number;
  readonly strategy?: StrategyName;
  readonly shards?: number;
}

/**
 * `coordinator config set`: changes the cluster settings record. The leader watches it and
 * applies the change safely (a shorter session timeout expels with the old one until every
 * worker has heard the new one). The same consistency rules as the replica flags apply.
 */
export async function setClusterSettings(
  client: Etcd3,
  keys: KeyLayout,
  change: SettingsChange,
): Promise<ClusterSettings> {
  return updateRecord<ClusterSettings>(
    client,
    keys.clusterConfig,
    (raw) => {
      if (raw === undefined)
        throw new CoordinatorError(
          "invalid_config",
          `${keys.clusterConfig} does not exist yet: it is written by the first leader; start a replica first`,
        );
      try {
        return parseRecord(clusterSettingsSchema, keys.clusterConfig, raw);
      } catch {
        // Replacing an unreadable record is what `config set` is for: start from the change alone.
        return {
          sessionTimeoutMs: 5000,
          heartbeatIntervalMs: 1000,
          strategy: "modulo",
          shards: 16,
          updatedAt: "",
          updatedBy: "",
        };
      }
    },
    (current) => {
      const next: ClusterSettings = {
        sessionTimeoutMs: change.sessionTimeoutMs ?? current.sessionTimeoutMs,
        heartbeatIntervalMs: change.heartbeatIntervalMs ?? current.heartbeatIntervalMs,
        strategy: change.strategy ?? current.strategy,
        shards: change.shards ?? current.shards,
        updatedAt: new Date().toISOString(),
        updatedBy: "cli",
        previous: {
          sessionTimeoutMs: current.sessionTimeoutMs,
          heartbeatIntervalMs: current.heartbeatIntervalMs,
        },
      };
      if (next.sessionTimeoutMs <= 2 * next.heartbeatIntervalMs)
        throw new CoordinatorError(
          "invalid_config",
          `session timeout (${next.sessionTimeoutMs} ms) must be above two heartbeat intervals (${2 * next.heartbeatIntervalMs} ms)`,
        );
      const parsed = clusterSettingsSchema.safeParse(next);
      if (!parsed.success)
        throw new CoordinatorError(
          "invalid_config",
          `invalid settings: ${parsed.error.issues[0]?.message ?? ""}`,
        );
      return next;
    },
  );
}
