import type { Etcd3 } from "etcd3";
import type { ConsoleGroup, ConsoleView } from "../console/console-view.js";
import {
  type ReplicaHttpAuth,
  type ReplicaHttpTarget,
  replicaRequest,
  sseData,
} from "../console/replica-http.js";
import { CoordinatorError } from "../errors.js";
import { parseLeaderInfo } from "../leadership/election.js";
import type { KeyLayout } from "../store/keys.js";

/**
 * The leader's console address, from its election value (the lowest create revision under
 * the election prefix). Throws CoordinatorError("unavailable") when no leader is elected or
 * it serves no HTTP.
 */
export async function leaderConsoleAddress(
  client: Etcd3,
  keys: KeyLayout,
): Promise<{ id: string; http: string; tls: boolean }> {
  const res = await client.getAll().prefix(keys.electionPrefix).sort("Create", "Ascend").limit(1).exec();
  const kv = res.kvs[0];
  const info = kv === undefined ? undefined : parseLeaderInfo(kv.value.toString());
  if (info === undefined) throw new CoordinatorError("leader_unavailable", "no leader is elected");
  if (info.http === undefined)
    throw new CoordinatorError(
      "leader_unavailable",
      `the leader ${info.id} serves no HTTP (--http-listen is off)`,
    );
  return { id: info.id, http: info.http, tls: info.httpTls === true };
}

/**
 * The views of a console feed (`<scheme>://<address>/events`) as they come, until `signal`
 * aborts or the stream ends (the caller reconnects, to a new leader after a failover).
 */
export async function* consoleViews(
  target: ReplicaHttpTarget,
  signal: AbortSignal,
  auth: ReplicaHttpAuth = {},
): AsyncGenerator<ConsoleView> {
  const res = await replicaRequest(target, "/events", auth, { signal, accept: "text/event-stream" });
  try {
    for await (const data of sseData(res)) yield JSON.parse(data) as ConsoleView;
  } finally {
    res.destroy();
  }
}

/** The leader's current view (its first event), from etcd's election value and its feed. */
export async function readLeaderView(
  client: Etcd3,
  keys: KeyLayout,
  auth: ReplicaHttpAuth = {},
  timeoutMs = 5000,
): Promise<ConsoleView> {
  const target = await leaderConsoleAddress(client, keys);
  const { http } = target;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    for await (const view of consoleViews(target, ac.signal, auth)) if (view.problem === null) return view;
  } catch (e) {
    if (e instanceof CoordinatorError) throw e;
    throw new CoordinatorError(
      "leader_unavailable",
      `cannot read the leader's console at ${http}: ${String(e)}`,
      {
        cause: e,
      },
    );
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  throw new CoordinatorError("leader_unavailable", `the leader's console at ${http} sent no view`);
}

/** Finds `group` in `view` or throws CoordinatorError("not_found"). */
export function groupOf(view: ConsoleView, group: string): ConsoleGroup {
  const g = view.groups.find((x) => x.group === group);
  if (g === undefined)
    throw new CoordinatorError(
      "not_found",
      `the leader has no group ${JSON.stringify(group)} (groups: ${view.groups.map((x) => x.group).join(", ") || "none"})`,
    );
  return g;
}

const table = (head: readonly string[], rows: readonly (readonly string[])[]): string => {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
};

/** `coordinator groups`: one line per group. */
export function formatGroups(view: ConsoleView): string {
  if (view.groups.length === 0) return "no groups";
  return table(
    ["GROUP", "STRATEGY", "VERSION", "PHASE", "SHARDS", "MEMBERS", "CONNECTED", "DEGRADED"],
    view.groups.map((g) => [
      g.group,
      g.strategy ?? "-",
      String(g.version ?? "-"),
      g.phase ?? "-",
      String(g.totalShards),
      String(g.members.length),
      String(g.members.filter((m) => m.connected).length),
      Object.keys(g.degraded).join(",") || "-",
    ]),
  );
}

/** `coordinator members --group g`: one line per member, as the leader sees it. */
export function formatMembers(g: ConsoleGroup): string {
  if (g.members.length === 0) return `group ${g.group}: no members`;
  return table(
    [
      "NODE",
      "STATE",
      "CONNECTED",
      "LAST HEARD",
      "CAPACITY",
      "SHARDS RUNNING",
      "TASKS RUNNING",
      "OWNS",
      "LABELS",
    ],
    g.members.map((m) => [
      m.nodeId,
      m.state,
      m.connected ? "yes" : "no",
      `${(m.lastHeardMsAgo / 1000).toFixed(1)}s ago`,
      String(m.capacity),
      String(m.runningShards),
      String(m.runningTasks),
      m.shards.join(",") || "-",
      Object.entries(m.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(",") || "-",
    ]),
  );
}

/** `coordinator shards --group g`: shard → owner, and the moves of a pending version. */
export function formatShards(g: ConsoleGroup): string {
  const head = `group ${g.group} version ${g.version ?? "-"} (${g.phase ?? "no version"})`;
  const owners = table(
    ["SHARD", "OWNER"],
    g.owners.map((o, s) => [String(s), o ?? "-"]),
  );
  const moves =
    g.phase === "pending"
      ? `\npending moves: ${g.moves.map((m) => `${m.shard}:${m.from ?? "-"}->${m.to ?? "-"}`).join(" ") || "none"}\nawaiting release: ${g.awaitingRelease.join(",") || "none"}; released: ${g.released.join(",") || "none"}`
      : "";
  return `${head}\n${owners}${moves}`;
}

/**
 * `coordinator watch`: what changed from `prev` to `next`, one line each (leader, candidates,
 * each group's version and phase, members joining and leaving). Empty when nothing did.
 */
export function describeChanges(prev: ConsoleView | undefined, next: ConsoleView): string[] {
  const out: string[] = [];
  const leaderOf = (v: ConsoleView | undefined) =>
    v?.leader === null || v?.leader === undefined ? "none" : `${v.leader.id} (epoch ${v.leader.epoch})`;
  if (leaderOf(prev) !== leaderOf(next)) out.push(`leader ${leaderOf(next)}`);
  const cands = (v: ConsoleView | undefined) => (v?.replicas ?? []).map((r) => r.id).join(",");
  if (next.replicas.length > 0 && cands(prev) !== cands(next)) out.push(`candidates ${cands(next)}`);
  for (const g of next.groups) {
    const before = prev?.groups.find((x) => x.group === g.group);
    if (before?.version !== g.version || before?.phase !== g.phase)
      out.push(
        `group ${g.group} version ${g.version ?? "-"} ${g.phase ?? ""} (${g.members.length} members)`.trimEnd(),
      );
    const had = new Set(before?.members.map((m) => m.nodeId) ?? []);
    const has = new Set(g.members.map((m) => m.nodeId));
    for (const m of has) if (!had.has(m)) out.push(`group ${g.group} member ${m} joined`);
    for (const m of had) if (!has.has(m)) out.push(`group ${g.group} member ${m} left`);
  }
  for (const g of prev?.groups ?? [])
    if (!next.groups.some((x) => x.group === g.group)) out.push(`group ${g.group} gone`);
  if (next.problem !== null && next.problem !== prev?.problem) out.push(`(${next.problem})`);
  return out;
}
