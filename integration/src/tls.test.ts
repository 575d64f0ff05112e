import { X509Certificate } from "node:crypto";
import { copyFile, writeFile } from "node:fs/promises";
import { get as httpsGet } from "node:https";
import { networkInterfaces } from "node:os";
import { connect as tlsConnect } from "node:tls";
import { sseData } from "@org/coordinator";
import { connectWorker, WorkerError } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { getFreePorts } from "./harness/free-port.js";
import { runCli, startCluster, until } from "./support/cluster-helpers.js";
import { RmProcess } from "./support/rm-cluster.js";
import { type CertPair, TestCa } from "./support/test-certs.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// gRPC over TLS and mutual TLS on real replica processes, with certificates made by openssl.
const env = useTestEnv(1);

async function newCa(): Promise<TestCa> {
  const ca = await TestCa.create();
  env.cleanup(() => ca.remove());
  return ca;
}

/**
 * What the tests beyond loopback share: this machine's first non-loopback IPv4 address, a CA,
 * a server certificate `name` for it (and 127.0.0.1), and an HTTP token file holding `token`.
 * Undefined (the test says it skipped) on a machine without such an address.
 */
async function beyondLoopback(name: string, token: string) {
  const ip = Object.values(networkInterfaces())
    .flat()
    .find((a) => a !== undefined && a.family === "IPv4" && !a.internal)?.address;
  if (ip === undefined) {
    console.log("no non-loopback IPv4 address on this machine: skipped");
    return undefined;
  }
  const ca = await newCa();
  const server = await ca.issue(name, { cn: "replica", san: [`IP:${ip}`, "IP:127.0.0.1"], usage: "server" });
  const tokenFile = `${ca.dir}/${name}-token`;
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  return { ip, ca, server, tokenFile, token };
}

function tlsFlags(server: CertPair, clientCa?: string): string[] {
  return [
    "--tls-cert",
    server.certFile,
    "--tls-key",
    server.keyFile,
    ...(clientCa === undefined ? [] : ["--tls-client-ca", clientCa]),
  ];
}

/** The fingerprint of the certificate a TLS server at `address` presents now (CA-verified). */
function servedFingerprint(address: string, ca: string, client?: CertPair): Promise<string> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const s = tlsConnect(
      {
        host: address.slice(0, i),
        port: Number(address.slice(i + 1)),
        ca,
        servername: "localhost",
        ALPNProtocols: ["h2"],
        ...(client === undefined ? {} : { cert: client.cert, key: client.key }),
      },
      () => {
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        resolve(fp);
      },
    );
    s.once("error", reject);
  });
}

/** connectWorker's refusal (it must not resolve), and how long it took. */
async function refusal(
  options: Parameters<typeof connectWorker>[0],
): Promise<{ error: WorkerError; ms: number }> {
  const t0 = performance.now();
  try {
    const w = await connectWorker(options);
    await w.close();
  } catch (e) {
    if (!(e instanceof WorkerError)) throw e;
    return { error: e, ms: performance.now() - t0 };
  }
  throw new Error("connectWorker resolved");
}

describe("gRPC TLS", () => {
  it("workers with client certificates join 3 mutual-TLS replicas and fail over as in plaintext", async () => {
    const ca = await newCa();
    const server = await ca.server();
    const c = await startCluster(env, tlsFlags(server, ca.ca.certFile));
    const status = await (await c.waitForLeader()).status();
    expect((status as unknown as { security: unknown }).security).toMatchObject({
      tls: { mutual: true },
      insecure: false,
    });
    const workers = await Promise.all(
      ["w1", "w2"].map(async (n) => {
        const id = await ca.issue(n, { cn: n, san: [`URI:shard://g1/${n}`], usage: "client" });
        const w = await connectWorker({
          coordinators: c.addresses,
          group: "g1",
          nodeId: n,
          tls: { ca: ca.ca.cert, cert: id.cert, key: id.key, serverName: "localhost" },
        });
        env.cleanup(() => w.close());
        return w;
      }),
    );
    for (const w of workers)
      await until(
        () => w.assignment,
        (a) => a.phase === "active" && a.running.length === 1,
        30_000,
      );
    const leader = await c.waitForLeader();
    const before = Math.max(...workers.map((w) => w.assignment.version));
    await leader.kill();
    await c.waitForLeader({ not: leader, timeoutMs: 30_000 });
    // Both stay members through the failover: the same shards, no new version needed.
    const w3id = await ca.issue("w3", { cn: "w3", san: ["URI:shard://g1/w3"], usage: "client" });
    const w3 = await connectWorker({
      coordinators: c.addresses,
      group: "g1",
      nodeId: "w3",
      tls: { ca: ca.ca.cert, cert: w3id.cert, key: w3id.key, serverName: "localhost" },
    });
    env.cleanup(() => w3.close());
    for (const w of [...workers, w3])
      await until(
        () => w.assignment,
        (a) => a.phase === "active" && a.running.length === 1 && a.version > before,
        30_000,
      );
  });

  it("refuses a plaintext client, a certificate from an unknown CA, an expired one and none with tls_failed at once; members undisturbed", async () => {
    const ca = await newCa();
    const other = await newCa();
    const server = await ca.server();
    const c = await startCluster(env, tlsFlags(server, ca.ca.certFile));
    const base = { coordinators: c.addresses, group: "g1", connectTimeoutMs: 20_000 };
    const good = await ca.issue("good", { cn: "good", san: ["URI:shard://g1/good"], usage: "client" });
    const ok = await connectWorker({
      ...base,
      nodeId: "good",
      tls: { ca: ca.ca.cert, cert: good.cert, key: good.key, serverName: "localhost" },
    });
    env.cleanup(() => ok.close());
    await until(
      () => ok.assignment,
      (a) => a.phase === "active" && a.running.length === 1,
    );

    // Refused by the client's own TLS stack (no client certificate: the server's alert
    // "certificate required"; a replica certificate from a CA it does not trust): `tls_failed`
    // at once, no retry loop.
    const none = await refusal({ ...base, nodeId: "none", tls: { ca: ca.ca.cert, serverName: "localhost" } });
    expect(none.error.code).toBe("tls_failed");
    expect(none.error.message).toMatch(/CERTIFICATE_REQUIRED/);
    const untrusted = await refusal({
      ...base,
      nodeId: "good2",
      tls: { ca: other.ca.cert, cert: good.cert, key: good.key, serverName: "localhost" },
    });
    expect(untrusted.error.code).toBe("tls_failed");
    expect(untrusted.error.message).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/);
    for (const r of [none, untrusted]) expect(r.ms).toBeLessThan(10_000);

    // Refused by the server after the handshake (TLS 1.3: Node verifies the client certificate
    // once the handshake is done and closes the socket without an alert), and a plaintext
    // client on a TLS port: the HTTP/2 client sees a bare close; the SDK checks once with a
    // TLS connection of its own (sdk tls-diagnosis.ts) and stops with tls_failed.
    const plain = await refusal({ ...base, nodeId: "plain" });
    expect(plain.error.code).toBe("tls_failed");
    expect(plain.error.message).toMatch(/speaks TLS/);
    const stranger = await other.issue("stranger", {
      cn: "stranger",
      san: ["URI:shard://g1/x"],
      usage: "client",
    });
    const unknown = await refusal({
      ...base,
      nodeId: "x",
      tls: { ca: ca.ca.cert, cert: stranger.cert, key: stranger.key, serverName: "localhost" },
    });
    const old = await ca.issue("old", {
      cn: "old",
      san: ["URI:shard://g1/old"],
      usage: "client",
      expired: true,
    });
    const expired = await refusal({
      ...base,
      nodeId: "old",
      tls: { ca: ca.ca.cert, cert: old.cert, key: old.key, serverName: "localhost" },
    });
    for (const r of [unknown, expired]) {
      expect(r.error.code).toBe("tls_failed");
      expect(r.error.message).toMatch(/does not accept this client certificate/);
    }
    for (const r of [plain, unknown, expired]) expect(r.ms).toBeLessThan(10_000);
    // A TLS client on a plaintext port.
    const plainCluster = await startCluster(env);
    const tlsToPlain = await refusal({
      coordinators: plainCluster.addresses,
      group: "g1",
      nodeId: "t",
      tls: { ca: ca.ca.cert, serverName: "localhost" },
    });
    expect(tlsToPlain.error.code).toBe("tls_failed");
    const members = await env.client.getAll().prefix(`${c.namespace}/groups/g1/members/`).keys();
    expect(members.map((k) => k.slice(k.lastIndexOf("/") + 1)).sort()).toEqual(["good"]);
    // Nothing disturbed the member that is in.
    expect(ok.assignment.phase).toBe("active");
    expect(ok.assignment.running).toEqual([0]);
  });

  it("serves a rotated certificate to new connections without a restart", async () => {
    const ca = await newCa();
    const first = await ca.server("replica-a");
    const second = await ca.server("replica-b");
    // Files the replica reads; the test overwrites them.
    const live = { certFile: `${ca.dir}/live.crt`, keyFile: `${ca.dir}/live.key` };
    await copyFile(first.certFile, live.certFile);
    await copyFile(first.keyFile, live.keyFile);
    const c = await startCluster(env, ["--tls-cert", live.certFile, "--tls-key", live.keyFile]);
    const r = c.replicas[0];
    if (r === undefined) throw new Error("no replica");
    // Started is not listening yet (a loaded machine showed it: ECONNREFUSED).
    await r.waitForLog((l) => l.event === "grpc_listening", 30_000);
    const fp = (p: CertPair) => new X509Certificate(p.cert).fingerprint256;
    expect(await servedFingerprint(r.address, ca.ca.cert)).toBe(fp(first));
    const from = r.logs.length;
    await copyFile(second.keyFile, live.keyFile);
    await copyFile(second.certFile, live.certFile);
    await r.waitForLog((l) => l.event === "tls_reloaded", 10_000, from);
    const after = await servedFingerprint(r.address, ca.ca.cert).catch((e: unknown) => {
      throw new Error(`${String(e)}\n${r.tail(20)}`);
    });
    expect(after).toBe(fp(second));
    // A worker without a client certificate is fine: no --tls-client-ca, no mutual TLS.
    const w = await connectWorker({
      coordinators: c.addresses,
      group: "g1",
      nodeId: "n1",
      tls: { ca: ca.ca.cert, serverName: "localhost" },
    });
    env.cleanup(() => w.close());
    await until(
      () => w.assignment,
      (a) => a.phase === "active" && a.running.length === 1,
    );
  });

  it("without TLS a non-loopback listen address is refused (exit 2, one line) unless --insecure, which /status shows", async () => {
    const [port, httpPort] = await getFreePorts(2);
    const bad = new RmProcess({
      id: "rm-open",
      etcd: env.etcd.endpoints,
      namespace: "/tls-open",
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: [...fastFlags, "--listen", `0.0.0.0:${port}`],
    });
    bad.start();
    env.cleanup(() => bad.kill());
    expect(await bad.exited).toBe(2);
    expect(bad.stderr.join("\n")).toMatch(/--listen 0\.0\.0\.0:\d+ is not a loopback address.*--insecure/);
    expect(bad.stderr.filter((l) => l.trim() !== "")).toHaveLength(1);

    const open = new RmProcess({
      id: "rm-insecure",
      etcd: env.etcd.endpoints,
      namespace: "/tls-open",
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: [...fastFlags, "--listen", `0.0.0.0:${port}`, "--insecure"],
    });
    open.start();
    env.cleanup(() => open.kill());
    await open.waitForLog((l) => l.event === "insecure", 30_000);
    const s = await until(
      () => open.status().catch(() => undefined),
      (v) => v !== undefined,
      30_000,
    );
    expect((s as unknown as { security: unknown }).security).toEqual({
      tls: null,
      insecure: true,
      auth: "none",
      etcd: { tls: false, user: null },
    });
  });

  it("a follower's console relays the leader's feed over HTTPS with the token, beyond loopback", async () => {
    const beyond = await beyondLoopback("relay-ip", "another-long-enough-http-token");
    if (beyond === undefined) return;
    const { ip, ca, server, tokenFile, token } = beyond;
    const ports = await getFreePorts(4);
    const replicas = [0, 1].map(
      (i) =>
        new RmProcess({
          id: `rm-relay-${i}`,
          etcd: env.etcd.endpoints,
          namespace: "/tls-relay",
          port: ports[2 * i] ?? 0,
          httpPort: ports[2 * i + 1] ?? 0,
          args: [
            ...fastFlags,
            ...tlsFlags(server, ca.ca.certFile),
            "--listen",
            `${ip}:${ports[2 * i]}`,
            "--http-listen",
            `${ip}:${ports[2 * i + 1]}`,
            "--http-token-file",
            tokenFile,
          ],
        }),
    );
    for (const r of replicas) {
      r.start();
      env.cleanup(() => r.kill());
    }
    const leader = await Promise.race(
      replicas.map((r) => r.waitForLog((l) => l.event === "leading", 30_000).then(() => r)),
    );
    const follower = replicas.find((r) => r !== leader) as RmProcess;
    await follower.waitForLog((l) => l.event === "http_listening", 30_000);
    // A view built by the leader, served by the follower, with no problem: the relay works.
    const view = await new Promise<{ builtBy: string; servedBy: string; problem: string | null }>(
      (resolve, reject) => {
        const req = httpsGet(
          `https://${ip}:${follower.options.httpPort}/events`,
          { ca: ca.ca.cert, headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } },
          (res) => {
            void (async () => {
              for await (const data of sseData(res)) {
                const v = JSON.parse(data) as { builtBy: string; servedBy: string; problem: string | null };
                if (v.problem === null && v.builtBy === leader.id) {
                  req.destroy();
                  resolve(v);
                  return;
                }
              }
            })().catch(() => undefined); // destroyed: the timeout below reports it
          },
        );
        req.on("error", (e) => reject(e));
        setTimeout(() => {
          req.destroy();
          reject(new Error(`no relayed view in 15 s; follower log: ${follower.tail(20)}`));
        }, 15_000);
      },
    );
    expect(view).toMatchObject({ builtBy: leader.id, servedBy: follower.id, problem: null });
    expect(follower.logs.filter((l) => l.event === "console_relay_failed")).toEqual([]);
  });

  it("HTTP: HTTPS with the same certificate; probes open, /status and /metrics only for loopback or the --http-token-file token", async () => {
    const beyond = await beyondLoopback("replica-ip", "a-long-enough-http-token-for-tests");
    if (beyond === undefined) return;
    const { ip, ca, server, tokenFile, token } = beyond;
    const [port, httpPort] = await getFreePorts(2);
    const r = new RmProcess({
      id: "rm-http",
      etcd: env.etcd.endpoints,
      namespace: "/tls-http",
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: [
        ...fastFlags,
        ...tlsFlags(server),
        "--listen",
        `${ip}:${port}`,
        "--http-listen",
        `${ip}:${httpPort}`,
        "--http-token-file",
        tokenFile,
      ],
    });
    r.start();
    env.cleanup(() => r.kill());
    await r.waitForLog((l) => l.event === "leading", 30_000);
    const get = (path: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpsGet(`https://${ip}:${httpPort}${path}`, { ca: ca.ca.cert, headers }, (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            body += d;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
      });
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/readyz")).status).toBe(200);
    for (const path of ["/status", "/metrics"]) {
      expect((await get(path)).status).toBe(401);
      expect((await get(path, { authorization: "Bearer wrong-token-of-the-same-size!!" })).status).toBe(401);
      expect((await get(path, { authorization: `Bearer ${token}` })).status).toBe(200);
    }
    const status = JSON.parse((await get("/status", { authorization: `Bearer ${token}` })).body) as {
      security: unknown;
    };
    expect(status.security).toMatchObject({ tls: { mutual: false }, insecure: false });

    // The operator's CLI reads the leader's listener the same way: HTTPS (the election value
    // says so), the CA from --http-ca, the token from --http-token-file.
    const cli = (...args: string[]) => runCli(env, "/tls-http", args);
    const withCreds = ["--http-ca", ca.ca.certFile, "--http-token-file", tokenFile];
    const groups = await cli("groups", "--json", ...withCreds);
    expect(groups.stderr).toBe("");
    expect(groups.code).toBe(0);
    expect(JSON.parse(groups.stdout)).toEqual([]);
    const noToken = await cli("groups", "--http-ca", ca.ca.certFile);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/https:\/\/.*\/events answered HTTP 401: .*--http-token-file/);
    const noCa = await cli("groups", "--http-token-file", tokenFile);
    expect(noCa.code).toBe(1);
    expect(noCa.stderr).toMatch(/certificate/i);
    const stepDown = await cli("leader", "step-down", "--json", ...withCreds);
    expect(stepDown.stderr).toBe("");
    expect(JSON.parse(stepDown.stdout)).toMatchObject({ steppedDown: "rm-http" });
    expect(r.tail(10_000)).not.toContain(token);
  });
});
