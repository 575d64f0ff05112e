import type { Etcd3 } from "etcd3";
import { CoordinatorError } from "../errors.js";
import type { KeyLayout } from "../store/keys.js";
import { pagedRange, prefixRange } from "../store/paged-range.js";
import {
  type AssignmentRecord,
  assignmentRecordSchema,
  type GroupConfig,
  type GroupControl,
  groupConfigSchema,
  groupControlSchema,
  type MemberRecord,
  memberRecordSchema,
  parseRecord,
} from "../store/records.js";

/** A member key as read: its record, or why it failed validation (its lease and id still count). */
export interface StoredMember {
  readonly nodeId: string;
  readonly leaseId: string;
  readonly record: MemberRecord | undefined;
  readonly error: string | undefined;
}

/** A record that may be absent, valid, or present but invalid. */
export type Stored<T> =
  | { readonly kind: "missing" }
  | { readonly kind: "ok"; readonly value: T }
  | { readonly kind: "invalid"; readonly error: string; readonly raw: string };

/** Everything a leader reads to serve a group: one consistent snapshot of its records. */
export interface StoredGroup {
  readonly members: readonly StoredMember[];
  readonly assignment: Stored<AssignmentRecord>;
  readonly config: Stored<GroupConfig>;
  readonly control: Stored<GroupControl>;
  /** The revision the operator keys (config, control) were read at: watch them from the next. */
  readonly operatorRevision: string;
}

function parseStored<T>(
  schema: Parameters<typeof parseRecord<T>>[0],
  key: string,
  raw: string | undefined,
): Stored<T> {
  if (raw === undefined) return { kind: "missing" };
  try {
    return { kind: "ok", value: parseRecord(schema, key, raw) };
  } catch (e) {
    return { kind: "invalid", error: CoordinatorError.from(e, "invalid_data").message, raw };
  }
}

/**
 * Reads a group's records (members in pages, then the three single keys), never the group's
 * other keys (tasks) and never the data records. Invalid records are returned as such: the
 * caller decides what each one means, so that one bad key never makes the read fail.
 */
export async function readGroup(client: Etcd3, keys: KeyLayout, group: string): Promise<StoredGroup> {
  const members: StoredMember[] = [];
  const prefix = keys.membersPrefix(group);
  for await (const kv of pagedRange(client, prefixRange(prefix))) {
    const key = kv.key.toString();
    const nodeId = key.slice(prefix.length);
    const s = parseStored(memberRecordSchema, key, kv.value.toString());
    members.push({
      nodeId,
      leaseId: kv.lease,
      record: s.kind === "ok" ? s.value : undefined,
      error:
        s.kind === "invalid"
          ? s.error
          : s.kind === "ok" && s.value.nodeId !== nodeId
            ? `${key}: nodeId ${JSON.stringify(s.value.nodeId)} does not match the key`
            : undefined,
    });
  }
  const [assignment, operator] = await Promise.all([
    client.get(keys.assignment(group)).string(),
    // `config` and `control` are adjacent in key order: one read, one revision to watch from.
    client
      .getAll()
      .inRange({ start: keys.config(group), end: `${keys.control(group)}\0` })
      .exec(),
  ]);
  const value = (key: string) => operator.kvs.find((kv) => kv.key.toString() === key)?.value.toString();
  return {
    members,
    assignment: parseStored(assignmentRecordSchema, keys.assignment(group), assignment ?? undefined),
    config: parseStored(groupConfigSchema, keys.config(group), value(keys.config(group))),
    control: parseStored(groupControlSchema, keys.control(group), value(keys.control(group))),
    operatorRevision: operator.header.revision,
  };
}

/** The version number an invalid assignment record still shows, if any (a floor for the next). */
export function salvageVersion(raw: string): number {
  try {
    const v: unknown = JSON.parse(raw);
    if (typeof v === "object" && v !== null) {
      const version = (v as Record<string, unknown>).version;
      if (typeof version === "number" && Number.isSafeInteger(version) && version > 0) return version;
    }
  } catch {
    // Not JSON at all (a truncated write, say): the number may still be readable.
    const m = /"version"\s*:\s*(\d{1,15})/.exec(raw);
    if (m?.[1] !== undefined) return Number(m[1]);
  }
  return 0;
}
