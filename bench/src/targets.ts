import { type EtcdCluster, startEtcdCluster } from "@org/integration/harness";
// RmCluster is not in @org/integration's exports: use its built JS (with its .d.ts).
import { RmCluster, type RmProcess } from "../../integration/dist/support/rm-cluster.js";
import { NodeChild } from "./children.js";
import { rssBytes } from "./proc-stats.js";

export { RmCluster, type RmProcess };

/** A server under load: its address, its pid (for /proc), and how to stop it. */
export interface Target {
  readonly kind: "leader" | "grpc-js" | "http2";
  readonly address: string;
  readonly pid: number;
  /** RSS right after start, before any stream (for RSS per stream). */
  readonly baselineRssBytes: number;
  /** The leader's HTTP listener (its /metrics), for the leader only. */
  readonly httpUrl?: string;
  stop(): Promise<void>;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startBare(kind: "grpc-js" | "http2"): Promise<Target> {
  const child = new NodeChild(kind === "http2" ? "bare-http2-server.js" : "bare-grpc-server.js", []);
  const { port } = (await child.waitFor("listening", 10_000)) as unknown as { port: number };
  await settle(500);
  return {
    kind,
    address: `127.0.0.1:${port}`,
    pid: child.pid,
    baselineRssBytes: rssBytes(child.pid),
    stop: () => child.kill(),
  };
}

export async function startLeader(etcd: EtcdCluster, args: readonly string[]): Promise<Target> {
  const cluster = await RmCluster.start({ etcd: etcd.endpoints, count: 1, args });
  const leader = await cluster.waitForLeader();
  await settle(500);
  const pid = leader.pid;
  if (pid === undefined) throw new Error("leader has no pid");
  return {
    kind: "leader",
    address: leader.address,
    httpUrl: leader.httpUrl,
    pid,
    baselineRssBytes: rssBytes(pid),
    // SIGTERM first: a replica run with RM_CPU_PROF writes its profile only on a clean exit.
    stop: async () => {
      await leader.stop();
      await cluster.stop();
    },
  };
}

export function startEtcd(): Promise<EtcdCluster> {
  return startEtcdCluster({ size: 1, name: "bench" });
}
