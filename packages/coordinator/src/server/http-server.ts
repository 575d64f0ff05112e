import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { rootCertificates, type SecureContextOptions } from "node:tls";
import type { Logger } from "pino";
import { Counter, collectDefaultMetrics, Gauge } from "prom-client";
import { ConsoleFeed } from "../console/console-feed.js";
import type { Replica } from "../replica/replica.js";
import { isLoopbackHost } from "../replica/replica-options.js";
import type { ReloadingServerCredentials } from "./tls-credentials.js";

/** How the HTTP listener is protected (see {@link startHttpServer}). */
export interface HttpSecurity {
  /** Serve HTTPS with the gRPC listener's certificate (reloaded with it). */
  readonly tls?: ReloadingServerCredentials | undefined;
  /** The bearer token (`--http-token-file`) that opens every path to non-loopback callers. */
  readonly token?: string | undefined;
  /** `--insecure` without a token: every path open to everyone (the old behaviour). */
  readonly open?: boolean;
}

const probes: ReadonlySet<string> = new Set(["/healthz", "/readyz"]);

/**
 * Whether a request may read a protected path: from loopback, with the bearer token, or when
 * the listener is open (`--insecure` without a token). The token is compared as SHA-256
 * digests in constant time.
 */
function permitted(req: IncomingMessage, security: HttpSecurity): boolean {
  if (isLoopbackHost((req.socket.remoteAddress ?? "").replace(/^::ffff:/, ""))) return true;
  if (security.token !== undefined) {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
    if (m?.[1] === undefined) return false;
    const digest = (s: string) => createHash("sha256").update(s).digest();
    return timingSafeEqual(digest(m[1]), digest(security.token));
  }
  return security.open === true;
}

/** The console's static files (`console/`, built by `pnpm build`), read once at start. */
const consoleAssets: readonly { path: string; file: string; type: string }[] = [
  { path: "/", file: "index.html", type: "text/html; charset=utf-8" },
  { path: "/console.css", file: "console.css", type: "text/css; charset=utf-8" },
  { path: "/console.js", file: "dist/app.js", type: "text/javascript; charset=utf-8" },
];
const consoleDir = new URL("../../console/", import.meta.url);

async function loadConsoleAssets(log: Logger): Promise<Map<string, { body: Buffer; type: string }>> {
  const out = new Map<string, { body: Buffer; type: string }>();
  for (const a of consoleAssets) {
    try {
      out.set(a.path, { body: await readFile(new URL(a.file, consoleDir)), type: a.type });
    } catch (e) {
      log.warn({ event: "console_asset_missing", file: a.file, err: String(e) });
    }
  }
  return out;
}

/**
 * Health, Prometheus metrics and a JSON status view on one small HTTP server:
 * `GET /healthz` (200 while the process serves, etcd or not), `GET /readyz` (200 while
 * etcd answers and the replica knows the leader; 503 with the reason otherwise),
 * `GET /metrics` (the replica's registry, see `createMetrics`, plus process metrics and the
 * gauges below), `GET /status` (role, leader, etcd connection, groups), and the console:
 * `GET /` (a page, its script and style) and `GET /events` (its live feed, see
 * {@link ConsoleFeed}). `close()` ends the feed's streams before the server.
 */
export async function startHttpServer(
  replica: Replica,
  listen: string,
  log: Logger,
  security: HttpSecurity = {},
): Promise<{ port: number; close(): Promise<void> }> {
  const registry = replica.metrics.registry;
  collectDefaultMetrics({ register: registry });
  const labels = { replica: replica.options.id };
  registry.setDefaultLabels(labels);
  new Gauge({
    name: "shard_replica_is_leader",
    help: "1 while this replica leads",
    registers: [registry],
    collect() {
      this.set(replica.role === "leader" ? 1 : 0);
    },
  });
  new Gauge({
    name: "shard_leader_epoch",
    help: "Leader epoch held by this replica (0 when following)",
    registers: [registry],
    collect() {
      const st = replica.status();
      this.set(st.role === "leader" ? st.leaderEpoch : 0);
    },
  });
  // A count since start, copied at each scrape: a counter (it only goes down on a restart).
  new Counter({
    name: "shard_etcd_writes_total",
    help: "Fenced etcd transactions committed by this replica since start",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(replica.status().etcdWrites);
    },
  });
  // Cumulative totals kept by the data sources, copied at each scrape.
  for (const [name, field, help] of [
    [
      "shard_data_source_rows_read_total",
      "rows",
      "Records FetchShardData read from the group's data store, by kind",
    ],
    [
      "shard_data_source_bytes_read_total",
      "bytes",
      "Id and payload bytes FetchShardData read from the data store",
    ],
  ] as const)
    new Counter({
      name,
      help,
      labelNames: ["kind"],
      registers: [registry],
      collect() {
        const totals = replica.dataReadTotals();
        this.reset();
        this.inc({ kind: "etcd" }, totals.etcd[field]);
        this.inc({ kind: "postgres" }, totals.postgres[field]);
      },
    });
  new Gauge({
    name: "shard_etcd_up",
    help: "1 while this replica's etcd calls and keep-alives are answered, 0 while etcd is unreachable",
    registers: [registry],
    collect() {
      this.set(replica.etcdHealth.state === "connected" ? 1 : 0);
    },
  });
  const members = new Gauge({
    name: "shard_group_members",
    help: "Members of each group (leader only)",
    labelNames: ["group"],
    registers: [registry],
  });
  const version = new Gauge({
    name: "shard_group_version",
    help: "Assignment version of each group (leader only)",
    labelNames: ["group"],
    registers: [registry],
  });
  const assets = await loadConsoleAssets(log);
  // A follower relays the leader's feed with the replicas' token and, over HTTPS, trusts
  // the CA of --tls-client-ca (replicas' certificates usually share it) besides the system's.
  const clientCa = replica.options.tlsClientCaFile;
  const feed = ConsoleFeed.start(replica, {
    log,
    relayAuth: {
      ...(security.token === undefined ? {} : { token: security.token }),
      ...(clientCa === "" ? {} : { ca: [...rootCertificates, (await readFile(clientCa)).toString("utf8")] }),
    },
  });
  const degraded = new Gauge({
    name: "shard_group_degraded",
    help: "1 while a group is degraded (an invalid record or config it cannot apply), by reason (leader only)",
    labelNames: ["group", "reason"],
    registers: [registry],
  });
  const pending = new Gauge({
    name: "shard_group_pending",
    help: "1 while a group's latest version is pending (a handoff in flight) (leader only)",
    labelNames: ["group"],
    registers: [registry],
  });
  const tasks = new Gauge({
    name: "shard_tasks",
    help: "Unfinished tasks of each group by state (queued, dispatched, running) in the leader's memory (leader only)",
    labelNames: ["group", "state"],
    registers: [registry],
  });
  const awaited = new Gauge({
    name: "shard_group_releases_awaited",
    help: "Members whose release the group's pending version still waits for (0 when active) (leader only)",
    labelNames: ["group"],
    registers: [registry],
  });
  const connected = new Gauge({
    name: "shard_group_connected_members",
    help: "Members of each group with a live stream to this leader (leader only)",
    labelNames: ["group"],
    registers: [registry],
  });
  const handler = (req: IncomingMessage, res: import("node:http").ServerResponse) => {
    void (async () => {
      const url = (req.url ?? "/").split("?")[0] ?? "/";
      if (req.method === "POST" && url === "/leader/step-down") {
        if (!permitted(req, security)) {
          res
            .writeHead(401, { "content-type": "text/plain", "www-authenticate": "Bearer" })
            .end("unauthorized: use loopback or authorization: Bearer <the --http-token-file token>\n");
          return;
        }
        try {
          const successor = await replica.stepDown();
          res
            .writeHead(200, { "content-type": "application/json" })
            .end(`${JSON.stringify({ steppedDown: replica.options.id, successor })}\n`);
        } catch (e) {
          res
            .writeHead(409, { "content-type": "application/json" })
            .end(`${JSON.stringify({ error: String(e instanceof Error ? e.message : e) })}\n`);
        }
        return;
      }
      if (req.method !== "GET") {
        res.writeHead(405).end();
        return;
      }
      // Probes stay open; the rest (topology, metrics) only for loopback or the token.
      if (!probes.has(url) && !permitted(req, security)) {
        res
          .writeHead(401, { "content-type": "text/plain", "www-authenticate": "Bearer" })
          .end("unauthorized: use loopback or authorization: Bearer <the --http-token-file token>\n");
        return;
      }
      if (url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (url === "/readyz") {
        const { ready, reason } = replica.readiness();
        res
          .writeHead(ready ? 200 : 503, { "content-type": "text/plain" })
          .end(ready ? `${reason}\n` : `not ready: ${reason}\n`);
      } else if (url === "/metrics") {
        for (const gauge of [members, version, degraded, pending, connected, tasks, awaited]) gauge.reset();
        for (const g of replica.leaderState()?.groups ?? []) {
          const counts = g.tasks?.counts();
          if (counts === undefined) continue;
          for (const state of ["queued", "dispatched", "running"] as const)
            tasks.set({ group: g.snapshot.group, state }, counts[state] ?? 0);
        }
        for (const g of replica.status().groups) {
          members.set({ group: g.group }, g.members.length);
          connected.set({ group: g.group }, g.members.filter((m) => m.connected).length);
          version.set({ group: g.group }, g.assignment?.version ?? 0);
          pending.set({ group: g.group }, g.assignment?.phase === "pending" ? 1 : 0);
          awaited.set({ group: g.group }, g.awaitingRelease.length);
          for (const reason of Object.keys(g.degraded)) degraded.set({ group: g.group, reason }, 1);
        }
        res.writeHead(200, { "content-type": registry.contentType }).end(await registry.metrics());
      } else if (url === "/status") {
        res
          .writeHead(200, { "content-type": "application/json" })
          .end(`${JSON.stringify(replica.status(), null, 2)}\n`);
      } else if (url === "/events") {
        feed.attach(req, res);
      } else if (assets.has(url)) {
        const a = assets.get(url);
        if (a !== undefined)
          res.writeHead(200, { "content-type": a.type, "cache-control": "no-cache" }).end(a.body);
      } else {
        res.writeHead(404).end();
      }
    })().catch((e: unknown) => {
      log.warn({ event: "http_error", err: String(e) });
      if (!res.headersSent) res.writeHead(500).end();
    });
  };
  const tls = security.tls;
  let server: Server;
  if (tls === undefined) server = createServer(handler);
  else {
    const https = createHttpsServer(tls._getSecureContextOptions() ?? {}, handler);
    // A rotated certificate reaches new HTTPS connections as it reaches gRPC ones.
    const watcher = (ctx: SecureContextOptions | null) => {
      if (ctx !== null) https.setSecureContext(ctx);
    };
    tls._addWatcher(watcher);
    https.once("close", () => tls._removeWatcher(watcher));
    server = https as unknown as Server;
  }
  const [host, portRaw] = splitHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(portRaw), host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  log.info({
    event: "http_listening",
    listen,
    port,
    tls: tls !== undefined,
    token: security.token !== undefined,
  });
  return {
    port,
    close: async () => {
      await feed.close();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

function splitHostPort(hp: string): [string, string] {
  const i = hp.lastIndexOf(":");
  return [hp.slice(0, i).replace(/^\[|\]$/g, ""), hp.slice(i + 1)];
}
