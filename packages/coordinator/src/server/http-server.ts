import { createServer, type Server } from "node:http";
import type { Logger } from "pino";
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { Replica } from "../replica/replica.js";

/**
 * Health, Prometheus metrics and a JSON status view on one small HTTP server:
 * `GET /healthz` (200 while the process serves), `GET /readyz` (200 once the replica knows
 * its role), `GET /metrics` (prom-client), `GET /status` (role, leader, groups).
 */
export async function startHttpServer(
  replica: Replica,
  listen: string,
  log: Logger,
): Promise<{ port: number; close(): Promise<void> }> {
  const registry = new Registry();
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
      this.set(replica.status().leaderEpoch);
    },
  });
  new Gauge({
    name: "shard_etcd_writes",
    help: "Fenced etcd transactions committed by this replica since start",
    registers: [registry],
    collect() {
      this.set(replica.status().etcdWrites);
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
  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = req.url ?? "/";
      if (req.method !== "GET") {
        res.writeHead(405).end();
        return;
      }
      if (url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (url === "/readyz") {
        const ready = replica.role === "leader" || replica.role === "follower";
        res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(`${replica.role}\n`);
      } else if (url === "/metrics") {
        members.reset();
        version.reset();
        for (const g of replica.status().groups) {
          members.set({ group: g.group }, g.members.length);
          version.set({ group: g.group }, g.assignment?.version ?? 0);
        }
        res.writeHead(200, { "content-type": registry.contentType }).end(await registry.metrics());
      } else if (url === "/status") {
        res
          .writeHead(200, { "content-type": "application/json" })
          .end(`${JSON.stringify(replica.status(), null, 2)}\n`);
      } else {
        res.writeHead(404).end();
      }
    })().catch((e: unknown) => {
      log.warn({ event: "http_error", err: String(e) });
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  const [host, portRaw] = splitHostPort(listen);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(portRaw), host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  log.info({ event: "http_listening", listen, port });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function splitHostPort(hp: string): [string, string] {
  const i = hp.lastIndexOf(":");
  return [hp.slice(0, i).replace(/^\[|\]$/g, ""), hp.slice(i + 1)];
}
