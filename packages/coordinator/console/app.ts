/**
 * The console page: renders each `view` event of `/events` (see `src/console/console-view.ts`).
 * Plain DOM and template strings, no framework: the page is a few tables re-rendered once a
 * second, and everything it shows is escaped. When its feed breaks for good (the replica
 * that served the page is gone), it switches to another replica's feed from the last view.
 */
import type {
  ConsoleGroup,
  ConsoleMember,
  ConsoleView,
  TimelineSegment,
} from "../src/console/console-view.js";

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing`);
  return el;
};

const esc = (v: unknown): string => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Distinct colours (Tableau 10), given to a group's owners in sorted order. */
const palette = [
  "#4e79a7",
  "#f28e2b",
  "#59a14f",
  "#e15759",
  "#76b7b2",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];
let colours = new Map<string, string>();

/** The colour of an owner in the view being rendered (see {@link assignColours}). */
function colour(owner: string): string {
  return colours.get(owner) ?? "#777";
}

/** Gives each node named in the view (members and timeline owners) a colour, in sorted order. */
function assignColours(v: ConsoleView): void {
  const names = new Set<string>();
  for (const g of v.groups) {
    for (const m of g.members) names.add(m.nodeId);
    for (const segs of g.timeline) for (const s of segs) if (s.owner !== null) names.add(s.owner);
  }
  colours = new Map([...names].sort().map((n, i) => [n, palette[i % palette.length] ?? "#777"]));
}

const ago = (ms: number): string => (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`);
const mib = (b: number): string => `${(b / 1048576).toFixed(0)} MiB`;

function renderLeader(v: ConsoleView): void {
  const l = v.leader;
  $("leader").innerHTML =
    l === null
      ? `leader: <b data-testid="leader-id">none</b>`
      : `leader: <b data-testid="leader-id">${esc(l.id)}</b> <span class="muted">epoch ${esc(l.epoch)} · since ${esc(new Date(l.since).toLocaleTimeString())}</span>`;
  $("served").textContent =
    `served by ${v.servedBy}${v.builtBy !== v.servedBy ? ` (from ${v.builtBy})` : ""} · ${new Date(v.at).toLocaleTimeString()}`;
  const p = $("problem");
  p.hidden = v.problem === null;
  p.textContent = v.problem ?? "";
}

function renderReplicas(v: ConsoleView): void {
  const rows = v.replicas.map(
    (r) =>
      `<tr data-testid="replica-${esc(r.id)}"><td>${esc(r.id)}</td><td>${r.leader ? '<span class="badge">leader</span>' : '<span class="badge off">candidate</span>'}</td><td>${esc(r.address)}</td><td>${r.http === null ? "" : `<a href="http://${esc(r.http)}/">${esc(r.http)}</a>`}</td><td class="num">${esc(r.revision)}</td></tr>`,
  );
  $("replicas").innerHTML =
    `<tr><th>replica</th><th>role</th><th>gRPC</th><th>console</th><th>election revision</th></tr>${rows.join("")}`;
}

function memberRow(m: ConsoleMember): string {
  const labels = Object.entries(m.labels)
    .map(([k, val]) => `<span class="label">${esc(k)}=${esc(val)}</span>`)
    .join("");
  return `<tr data-testid="member-${esc(m.nodeId)}"><td><i style="display:inline-block;width:.7em;height:.7em;background:${colour(m.nodeId)}"></i> ${esc(m.nodeId)}</td><td>${labels}</td><td>${esc(m.state)}${m.connected ? "" : ' <span class="badge off">disconnected</span>'}</td><td class="num">${esc(m.capacity)}</td><td class="num">${m.cpuPercent.toFixed(0)}%</td><td class="num">${mib(m.memoryRssBytes)}</td><td class="num">${m.eventLoopDelayMs.toFixed(1)} ms</td><td class="num">${esc(m.runningShards)}</td><td class="num">${esc(m.runningTasks)}</td><td class="num">${ago(m.lastHeardMsAgo)}</td><td>${esc(m.shards.join(" "))}</td><td>${esc(m.replica)}</td></tr>`;
}

function timeline(g: ConsoleGroup, at: number, windowMs: number): string {
  // The axis spans the history there is (at least a minute), up to the window.
  const earliest = Math.min(at, ...g.timeline.flatMap((segs) => segs.map((s) => s.from)));
  const spanMs = Math.min(windowMs, Math.max(60_000, at - earliest));
  const start = at - spanMs;
  const pct = (t: number) => (Math.max(0, t - start) / spanMs) * 100;
  const row = (segs: readonly TimelineSegment[], shard: number) =>
    `<div class="tl-row" title="shard ${shard}" data-testid="timeline-${esc(g.group)}-${shard}">${segs
      .map(
        (s) =>
          `<div class="tl-seg${s.owner === null ? " gap" : ""}" data-owner="${esc(s.owner ?? "")}" style="left:${pct(s.from)}%;width:${Math.max(0.2, pct(s.to) - pct(s.from))}%;${s.owner === null ? "" : `background:${colour(s.owner)}`}" title="shard ${shard}: ${esc(s.owner ?? "handoff")} ${new Date(s.from).toLocaleTimeString()}–${new Date(s.to).toLocaleTimeString()}"></div>`,
      )
      .join("")}</div>`;
  const owners = [...new Set(g.timeline.flat().map((s) => s.owner))]
    .filter((o): o is string => o !== null)
    .sort();
  return `<div class="legend">${owners.map((o) => `<span><i style="background:${colour(o)}"></i>${esc(o)}</span>`).join("")}<span class="muted">hatched: no owner (handoff) · plain grey: not yet recorded by this replica</span></div>
<div class="timeline">${g.timeline.map(row).join("")}</div>
<div class="tl-axis"><span>−${Math.round(spanMs / 1000)} s</span><span>now</span></div>`;
}

function renderGroup(g: ConsoleGroup, v: ConsoleView): string {
  const phase =
    g.phase === null
      ? ""
      : `<span class="badge${g.phase === "pending" ? " pending" : ""}" data-testid="phase-${esc(g.group)}">${esc(g.phase)}</span>`;
  const degraded = Object.entries(g.degraded)
    .map(([k, why]) => `<div class="problem">degraded: ${esc(k)}: ${esc(why)}</div>`)
    .join("");
  const handoff =
    g.phase === "pending"
      ? `<h3>Handoff</h3><div>moves: ${g.moves.map((m) => `${m.shard}: ${esc(m.from ?? "–")} → ${esc(m.to ?? "–")}`).join(", ") || "none"}</div>
<div>awaiting release: ${esc(g.awaitingRelease.join(", ") || "none")} · released: ${esc(g.released.join(", ") || "none")}</div>`
      : "";
  const shards = g.owners
    .map(
      (o, s) =>
        `<span class="shard" style="background:${o === null ? "#999" : colour(o)}" title="shard ${s}: ${esc(o ?? "unowned")}">${s}</span>`,
    )
    .join("");
  const tasks =
    g.tasks === null
      ? `<p class="muted">No tasks loaded for this group on the leader (they appear once tasks are submitted or a worker joins).</p>`
      : `<table data-testid="tasks-${esc(g.group)}"><tr>${Object.keys(g.tasks.counts)
          .map((s) => `<th>${esc(s)}</th>`)
          .join("")}</tr><tr>${Object.values(g.tasks.counts)
          .map((n) => `<td class="num">${esc(n)}</td>`)
          .join("")}</tr></table>${
          g.tasks.latestFailures.length === 0
            ? `<p class="muted">No failures.</p>`
            : `<h3>Latest failures</h3><table>${g.tasks.latestFailures
                .map(
                  (f) =>
                    `<tr><td>${esc(f.id)}</td><td>${esc(f.worker ?? "")}</td><td>${esc(f.error)}</td></tr>`,
                )
                .join("")}</table>`
        }`;
  return `<section class="group" data-testid="group-${esc(g.group)}">
<h2>group ${esc(g.group)}</h2>
<div class="summary"><span>strategy <b>${esc(g.strategy ?? "–")}</b></span><span>version <b data-testid="version-${esc(g.group)}">${esc(g.version ?? "–")}</b></span><span>${phase}</span><span>${esc(g.totalShards)} shards</span><span>${g.members.length} members</span></div>
${degraded}
<h3>Members</h3>
<table><tr><th>node</th><th>labels</th><th>state</th><th>capacity</th><th>CPU</th><th>memory</th><th>event-loop delay</th><th>shards running</th><th>tasks running</th><th>last heard</th><th>owns</th><th>admitted by</th></tr>${g.members.map(memberRow).join("")}</table>
${handoff}
<h3>Shard → owner</h3><div class="shards">${shards}</div>
<h3>Ownership timeline</h3>${timeline(g, v.at, v.timelineWindowMs)}
<h3>Tasks</h3>${tasks}
</section>`;
}

function render(v: ConsoleView): void {
  assignColours(v);
  renderLeader(v);
  renderReplicas(v);
  $("groups").innerHTML =
    v.groups.length === 0
      ? `<p class="muted">No groups yet.</p>`
      : v.groups.map((g) => renderGroup(g, v)).join("");
  document.body.dataset.updated = String(v.at);
}

/** Follows a feed; after 3 errors in a row without a view, tries the next replica's feed. */
function follow(): void {
  let last: ConsoleView | undefined;
  let errors = 0;
  let tried = 0;
  const connect = (url: string) => {
    const es = new EventSource(url);
    es.addEventListener("view", (e) => {
      errors = 0;
      last = JSON.parse((e as MessageEvent<string>).data) as ConsoleView;
      render(last);
    });
    es.onerror = () => {
      errors += 1;
      if (errors < 3) return;
      const others = (last?.replicas ?? []).filter((r) => r.http !== null && r.id !== last?.servedBy);
      const next = others[tried++ % Math.max(1, others.length)];
      if (next?.http == null) return;
      es.close();
      errors = 0;
      connect(`http://${next.http}/events`);
    };
  };
  connect("/events");
}

follow();
