import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { status } from "@grpc/grpc-js";
import { changeControl, keyLayout } from "@org/coordinator";
import { fetchShardData, RawStream } from "../support/raw-client.js";
import { type DrillEnvironment, drillTiming } from "./environment.js";
import { timeNewLeader, waitForExpulsion } from "./scenario-helpers.js";
import { churnScenarios } from "./scenarios-churn.js";
import { dataScenarios } from "./scenarios-data.js";
import { etcdScenarios } from "./scenarios-etcd.js";
import { identityScenarios } from "./scenarios-identity.js";
import { networkScenarios } from "./scenarios-network.js";
import { postgresScenarios } from "./scenarios-postgres.js";
import { securityScenarios } from "./scenarios-security.js";
import { taskScenarios } from "./scenarios-tasks.js";

/** What a scenario measured besides the timeline. */
export interface ScenarioResult {
  failoverMs?: number;
  detectionMs?: number;
  /** True when every worker stayed alive, so I3 (nothing moves) applies. */
  workersAlive: boolean;
  /** The fault should not change the version (leader faults with every worker alive). */
  expectSameVersion: boolean;
  /** Workers may pause at their self-fence (etcd without quorum: safety over availability). */
  handlersMayRestart?: boolean;
  /** Findings that fail the scenario by themselves (e.g. a wrong status to bad input). */
  problems: string[];
  /** Other figures the scenario measured, reported as they are (e.g. a bound it checked). */
  measured?: Record<string, number | string | null>;
}

export interface Scenario {
  readonly name: string;
  readonly description: string;
  /** Extra workers released at once (burst); default none. */
  readonly options?: {
    proxyFirstReplica?: boolean;
    workers?: number;
    /** Run every process on a host of its own (virtual network), so links can be cut. */
    network?: "loopback" | "netns";
    /** Worker hosts beyond the first workers' (netns); see DrillEnvironmentOptions. */
    spareWorkerHosts?: number;
    /** Extra flags for replica i (0-based), e.g. replicas with different settings. */
    replicaArgs?: (index: number) => readonly string[];
    /** Extra dataset-job flags for the workers started before the fault. */
    workerArgs?: readonly string[];
    /** Where the dataset lives (default the built-in etcd source). */
    dataSource?: "etcd" | "postgres";
    /** Replicas with `--auth tokens`, workers with a token (see DrillEnvironmentOptions.auth). */
    auth?: "tokens";
  };
  run(env: DrillEnvironment): Promise<ScenarioResult>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const t = drillTiming;

export const scenarios: readonly Scenario[] = [
  {
    name: "leader-kill",
    description: "SIGKILL the leading replica",
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const t0 = Date.now();
      await leader.kill();
      const failoverMs = await timeNewLeader(env, leader, t0);
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems: [] };
    },
  },
  {
    name: "leader-term",
    description: "SIGTERM the leading replica (it resigns at once)",
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const t0 = Date.now();
      const exited = leader.stop();
      const failoverMs = await timeNewLeader(env, leader, t0);
      const code = await exited;
      return {
        failoverMs,
        workersAlive: true,
        expectSameVersion: true,
        problems: code === 0 ? [] : [`leader exited with ${code}`],
      };
    },
  },
  {
    name: "leader-pause",
    description: "SIGSTOP the leader past its TTL, then SIGCONT",
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const from = leader.logs.length;
      const t0 = Date.now();
      leader.pause();
      const failoverMs = await timeNewLeader(env, leader, t0);
      await sleep(1000);
      leader.resume();
      const problems: string[] = [];
      try {
        await leader.waitForLog((l) => l.event === "leadership_lost", 10_000, from);
      } catch {
        problems.push("the resumed leader did not report leadership_lost");
      }
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems };
    },
  },
  {
    name: "rolling-restart",
    description: "SIGTERM and restart each replica in turn",
    async run(env) {
      let failoverMs = 0;
      for (const r of env.rm.replicas) {
        const wasLeader = (await r.status().catch(() => undefined))?.role === "leader";
        const t0 = Date.now();
        await r.stop();
        if (wasLeader) failoverMs = Math.max(failoverMs, await timeNewLeader(env, r, t0));
        r.start();
        await r.waitForLog((l) => l.event === "grpc_listening", 10_000, r.logs.length > 0 ? 0 : 0);
        await sleep(1000);
      }
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems: [] };
    },
  },
  {
    name: "worker-kill",
    description: "SIGKILL one worker process",
    async run(env) {
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const t0 = Date.now();
      victim.signal("SIGKILL");
      const detectionMs = await waitForExpulsion(env, "worker-1", t0, t.sessionTimeoutMs * 3);
      return {
        detectionMs,
        workersAlive: false,
        expectSameVersion: false,
        problems: detectionMs === undefined ? ["never expelled"] : [],
      };
    },
  },
  {
    name: "drain-under-load",
    description:
      "drain one worker (coordinator drain) while every worker processes items: its shards move through the handoff, then it leaves by itself",
    options: { workerArgs: ["--on-drain", "leave"] },
    async run(env) {
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const t0 = Date.now();
      await changeControl(env.client, keyLayout(env.namespace), env.group, {
        kind: "drain",
        node: victim.node,
        drained: true,
      });
      const code = await Promise.race([
        victim.exited,
        sleep(t.sessionTimeoutMs * 6).then(() => "timeout" as const),
      ]);
      const problems: string[] = [];
      if (code !== 0) problems.push(`the drained worker did not leave cleanly (exit ${String(code)})`);
      if (!victim.events.some((e) => e.event === "drain_requested"))
        problems.push("DRAIN never reached the worker");
      if (!victim.events.some((e) => e.event === "drained_leaving"))
        problems.push("the worker did not leave after its shards moved");
      return {
        workersAlive: false,
        expectSameVersion: false,
        problems,
        measured: { leftAfterMs: code === "timeout" ? null : Date.now() - t0 },
      };
    },
  },
  {
    name: "worker-pause",
    description: "SIGSTOP one worker past the session timeout, then SIGCONT",
    async run(env) {
      const victim = env.workers[0];
      if (victim === undefined) throw new Error("no worker");
      const t0 = Date.now();
      victim.signal("SIGSTOP");
      const detectionMs = await waitForExpulsion(env, "worker-1", t0, t.sessionTimeoutMs * 3);
      await sleep(1000);
      victim.signal("SIGCONT");
      return {
        detectionMs,
        workersAlive: false,
        expectSameVersion: false,
        problems: detectionMs === undefined ? ["never expelled"] : [],
      };
    },
  },
  {
    name: "worker-churn",
    description: "a worker joins or leaves every 1.5 s, six times",
    async run(env) {
      for (let i = 0; i < 6; i++) {
        if (i % 2 === 0) env.startWorker();
        else await env.workers.find((w) => w.running)?.stop();
        await sleep(1500);
      }
      return { workersAlive: false, expectSameVersion: false, problems: [] };
    },
  },
  {
    name: "burst-join",
    description: "20 workers join at the same instant (one new version expected)",
    async run(env) {
      const before = (await env.assignment())?.version ?? 0;
      const burst = Array.from({ length: 20 }, () => env.startWorker({ waitForSignal: true }));
      // Wait until every process is up and waiting at its gate, then open all gates at once.
      await Promise.all(burst.map((w) => w.waitFor((e) => e.event === "waiting", 60_000)));
      for (const w of burst) w.signal("SIGUSR2");
      await sleep(t.rebalanceDelayMs * 6);
      const versions = new Set(
        env.etcdEvents
          .filter((e) => e.type === "put" && e.key.endsWith("/assignment"))
          .map((e) => (JSON.parse(e.value) as { version: number }).version)
          .filter((v) => v > before),
      );
      const problems = versions.size === 1 ? [] : [`the burst produced ${versions.size} versions, not 1`];
      return { workersAlive: true, expectSameVersion: false, problems };
    },
  },
  {
    name: "etcd-member-kill",
    description: "SIGKILL one etcd member (quorum kept)",
    async run(env) {
      const member = env.etcd.members[2];
      await member?.kill();
      await sleep(t.sessionTimeoutMs);
      await member?.restart();
      return { workersAlive: true, expectSameVersion: true, problems: [] };
    },
  },
  {
    name: "etcd-quorum-loss",
    description: "pause 2 of 3 etcd members for longer than the session timeout, then resume",
    async run(env) {
      const [, a, b] = env.etcd.members;
      const old = await env.rm.waitForLeader();
      const from = old.logs.length;
      a?.pause();
      b?.pause();
      const problems: string[] = [];
      await sleep(t.sessionTimeoutMs + 2000);
      try {
        await old.waitForLog((l) => l.event === "leadership_lost", 1, from);
      } catch {
        problems.push("the leader did not step down while etcd had no quorum");
      }
      a?.resume();
      b?.resume();
      const t0 = Date.now();
      await env.rm.waitForLeader({ timeoutMs: 30_000 });
      return {
        failoverMs: Date.now() - t0,
        workersAlive: true,
        expectSameVersion: true,
        handlersMayRestart: true,
        problems,
      };
    },
  },
  {
    name: "replica-cut-off",
    description: "cut the leading replica off from etcd (packets vanish) while etcd keeps quorum",
    options: { proxyFirstReplica: true },
    async run(env) {
      const proxy = env.proxy;
      if (proxy === undefined) throw new Error("no proxy");
      // Make rm-1 (the proxied replica) the leader: gracefully stop whoever else leads.
      for (let i = 0; i < 6; i++) {
        const leader = await env.rm.waitForLeader();
        if (leader.id === "rm-1") break;
        await leader.stop();
        leader.start();
        await sleep(1500);
      }
      const leader = await env.rm.waitForLeader();
      if (leader.id !== "rm-1")
        return { workersAlive: true, expectSameVersion: true, problems: ["could not make rm-1 lead"] };
      const from = leader.logs.length;
      const t0 = Date.now();
      proxy.blackhole();
      const failoverMs = await timeNewLeader(env, leader, t0);
      const problems: string[] = [];
      try {
        await leader.waitForLog((l) => l.event === "leadership_lost", 10_000, from);
      } catch {
        problems.push("the cut-off leader did not step down");
      }
      await sleep(1000);
      proxy.restore();
      return { failoverMs, workersAlive: true, expectSameVersion: true, problems };
    },
  },
  {
    name: "bad-input",
    description: "bad clients (raw grpc-js and plain sockets) while the workers run",
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const problems: string[] = [];
      const expectStatus = async (what: string, want: status, fn: (s: RawStream) => void) => {
        const s = new RawStream(leader.address);
        fn(s);
        const got = await Promise.race([s.ended, sleep(10_000).then(() => undefined)]);
        s.close();
        if (got?.code !== want)
          problems.push(
            `${what}: expected ${status[want]}, got ${got === undefined ? "nothing" : status[got.code]}`,
          );
      };
      await expectStatus("first message not hello", status.INVALID_ARGUMENT, (s) => s.heartbeat("x"));
      await expectStatus("invalid group", status.INVALID_ARGUMENT, (s) => s.hello("bad group", "n"));
      await expectStatus("invalid node id", status.INVALID_ARGUMENT, (s) => s.hello(env.group, "../etc"));
      // Over --max-message-bytes (4 MiB by default): refused by the transport.
      await expectStatus("oversize message", status.RESOURCE_EXHAUSTED, (s) =>
        s.hello(env.group, "big", { labels: { x: "y".repeat(5 * 1024 * 1024) } }),
      );
      // Under it, but labels no member record should carry.
      await expectStatus("oversize labels", status.INVALID_ARGUMENT, (s) =>
        s.hello(env.group, "big", { labels: { x: "y".repeat(100_000) } }),
      );
      await expectStatus("duplicate node id", status.ALREADY_EXISTS, (s) => s.hello(env.group, "worker-2"));
      await expectStatus("garbage protobuf", status.INVALID_ARGUMENT, (s) =>
        s.sendBytes(new Uint8Array([0xff, 0xff, 0xff])),
      );
      await expectStatus("heartbeat flood", status.RESOURCE_EXHAUSTED, (s) => {
        s.hello("flood-group", "flooder");
        void s
          .waitFor((m) => m.kind.case === "welcome")
          .then(() => {
            for (let i = 0; i < 300; i++) s.heartbeat("flooder");
          });
      });
      await expectStatus("half-open (hello, then silence)", status.UNAVAILABLE, (s) =>
        s.hello("quiet-group", "quiet"),
      );
      try {
        await fetchShardData(leader.address, {
          group: env.group,
          nodeId: "worker-2",
          shardId: 999,
          sessionToken: "x",
        });
        problems.push("FetchShardData for a shard not owned succeeded");
      } catch (e) {
        const code = (e as { code?: number }).code;
        if (code !== status.FAILED_PRECONDITION)
          problems.push(`FetchShardData not owned: expected FAILED_PRECONDITION, got ${code}`);
      }
      for (const [what, bytes] of [
        ["garbage bytes", Buffer.from("\x00\x01\x02garbage\r\n\r\n")],
        ["HTTP/1.1 request", Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
      ] as const) {
        const closed = await new Promise<boolean>((resolve) => {
          const sock = connect(Number(leader.address.split(":")[1]), "127.0.0.1", () => sock.write(bytes));
          const timer = setTimeout(() => {
            sock.destroy();
            resolve(false);
          }, 5000);
          sock.on("data", () => undefined);
          sock.on("close", () => {
            clearTimeout(timer);
            resolve(true);
          });
          sock.on("error", () => undefined);
        });
        if (!closed) problems.push(`${what}: the connection was not closed`);
      }
      // A TLS client on this plaintext port: its handshake fails promptly, it does not hang.
      const tlsOutcome = await new Promise<string>((resolve) => {
        const sock = tlsConnect({
          host: "127.0.0.1",
          port: Number(leader.address.split(":")[1]),
          rejectUnauthorized: false,
          ALPNProtocols: ["h2"],
        });
        const timer = setTimeout(() => {
          sock.destroy();
          resolve("hang");
        }, 5000);
        sock.once("secureConnect", () => {
          clearTimeout(timer);
          sock.destroy();
          resolve("handshake succeeded");
        });
        sock.once("error", () => {
          clearTimeout(timer);
          resolve("refused");
        });
        sock.once("close", () => {
          clearTimeout(timer);
          resolve("refused");
        });
      });
      if (tlsOutcome !== "refused") problems.push(`TLS client on the plaintext port: ${tlsOutcome}`);
      return { workersAlive: true, expectSameVersion: true, problems };
    },
  },
];

/**
 * Every scenario `pnpm drill` runs, in order: the list above, then each scenarios-*.ts
 * file's list (add a file's list here).
 */
export const allScenarios: readonly Scenario[] = [
  ...scenarios,
  ...etcdScenarios,
  ...networkScenarios,
  ...churnScenarios,
  ...identityScenarios,
  ...dataScenarios,
  ...postgresScenarios,
  ...taskScenarios,
  ...securityScenarios,
];
