import type { Etcd3 } from "etcd3";
import { parseLeaderInfo } from "../leadership/election.js";
import type { KeyLayout } from "../store/keys.js";
import {
  type AssignmentRecord,
  assignmentRecordSchema,
  type MemberRecord,
  memberRecordSchema,
  parseRecord,
} from "../store/records.js";
import { taskKeys } from "../tasks/task-keys.js";
import { taskStates } from "../tasks/task-record.js";

/** The whole coordinator state, read from etcd (what `coordinator status` prints). */
export interface StatusReport {
  readonly namespace: string;
  readonly leader: { readonly id: string; readonly address: string; readonly epoch: number } | null;
  readonly candidates: number;
  readonly groups: readonly {
    readonly group: string;
    readonly members: readonly MemberRecord[];
    readonly assignment: AssignmentRecord | null;
    /**
     * Task records by state, as etcd has them: a running task shows as `dispatched` (running
     * and progress live in the leader's memory); finished ones until their retention ends.
     */
    readonly tasks: Readonly<Record<string, number>>;
    readonly errors: readonly string[];
  }[];
}

/** Reads the report with a handful of range requests. */
export async function readStatus(client: Etcd3, keys: KeyLayout): Promise<StatusReport> {
  const election = await client.getAll().prefix(keys.electionPrefix).sort("Create", "Ascend").exec();
  const first = election.kvs[0];
  const info = first === undefined ? undefined : parseLeaderInfo(first.value.toString());
  const groupKeys = await client.getAll().prefix(keys.groupsPrefix).keys();
  const names = [
    ...new Set(
      groupKeys.map((k) => keys.parseGroupKey(k)?.group).filter((g): g is string => g !== undefined),
    ),
  ].sort();
  const groups = [];
  const tk = taskKeys(keys);
  for (const group of names) {
    const errors: string[] = [];
    const members: MemberRecord[] = [];
    const kvs = await client.getAll().prefix(keys.membersPrefix(group)).strings();
    for (const [key, value] of Object.entries(kvs)) {
      try {
        members.push(parseRecord(memberRecordSchema, key, value));
      } catch (e) {
        errors.push(String(e));
      }
    }
    let assignment: AssignmentRecord | null = null;
    const raw = await client.get(keys.assignment(group)).string();
    if (raw !== null) {
      try {
        assignment = parseRecord(assignmentRecordSchema, keys.assignment(group), raw);
      } catch (e) {
        errors.push(String(e));
      }
    }
    const tasks = await countTasks(client, tk.tasksPrefix(group), errors);
    const taskCount = Object.values(tasks).reduce((a, b) => a + b, 0);
    if (members.length === 0 && assignment === null && taskCount === 0 && errors.length === 0) continue; // data only
    members.sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    groups.push({ group, members, assignment, tasks, errors });
  }
  return {
    namespace: keys.namespace,
    leader:
      first === undefined
        ? null
        : { id: info?.id ?? "?", address: info?.address ?? "?", epoch: Number(first.create_revision) },
    candidates: election.kvs.length,
    groups,
  };
}

/** Task records under `prefix`, counted by state (every state present, zeros included, when any exists). */
async function countTasks(client: Etcd3, prefix: string, errors: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const values = await client.getAll().prefix(prefix).strings();
  const n = Object.keys(values).length;
  if (n === 0) return counts;
  // `running` is never in etcd (see the field's comment).
  for (const s of taskStates) if (s !== "running") counts[s] = 0;
  let bad = 0;
  for (const raw of Object.values(values)) {
    try {
      const state = (JSON.parse(raw) as { state?: unknown }).state;
      if (typeof state === "string" && state in counts) counts[state] = (counts[state] ?? 0) + 1;
      else bad += 1;
    } catch {
      bad += 1;
    }
  }
  if (bad > 0) errors.push(`${bad} task records under ${prefix} have no readable state`);
  return counts;
}

/** The human form: one block per group, one line per member. */
export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  lines.push(
    r.leader === null
      ? `leader: none (${r.candidates} candidates)`
      : `leader: ${r.leader.id} at ${r.leader.address} (epoch ${r.leader.epoch}, ${r.candidates} candidates)`,
  );
  if (r.groups.length === 0) lines.push("no groups");
  for (const g of r.groups) {
    const a = g.assignment;
    lines.push(
      a === null
        ? `group ${g.group}: no assignment yet, ${g.members.length} members`
        : `group ${g.group}: version ${a.version} ${a.phase}, ${a.strategy}, ${a.totalShards} shards, ${g.members.length} members` +
            (a.awaitingRelease.length > 0 ? `, awaiting release from ${a.awaitingRelease.join(",")}` : ""),
    );
    const owners = a?.owners ?? {};
    for (const m of g.members) {
      const shards = owners[m.nodeId] ?? [];
      lines.push(
        `  ${m.nodeId.padEnd(24)} shards [${shards.join(",")}]  capacity ${m.capacity}  via ${m.replica}`,
      );
    }
    const tasks = Object.entries(g.tasks);
    if (tasks.length > 0)
      lines.push(
        `  tasks: ${tasks.map(([state, n]) => `${state} ${n}`).join(", ")} (running ones show as dispatched)`,
      );
    for (const e of g.errors) lines.push(`  ! ${e}`);
  }
  return lines.join("\n");
}
