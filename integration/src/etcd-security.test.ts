import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connectWorker } from "@org/worker-sdk";
import { afterEach, describe, expect, it } from "vitest";
import { startEtcdCluster } from "./harness/etcd-cluster.js";
import { getFreePorts } from "./harness/free-port.js";
import { withParentDeathSignal } from "./harness/parent-death-signal.js";
import { trackChild } from "./harness/process-registry.js";
import { until } from "./support/cluster-helpers.js";
import { coordinatorBin, RmCluster, RmProcess } from "./support/rm-cluster.js";
import { TestCa } from "./support/test-certs.js";
import { fastFlags } from "./support/test-env.js";

// The replicas against an etcd that wants credentials: etcd's own users with a role limited
// to the namespace prefixes, and TLS with client certificates (etcd 3.4 flags).
const run = promisify(execFile);
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function etcdctl(endpoint: string, args: readonly string[], user?: string): Promise<string> {
  const { stdout } = await run("etcdctl", [
    `--endpoints=${endpoint}`,
    ...(user === undefined ? [] : [`--user=${user}`]),
    ...args,
  ]);
  return stdout;
}

/** Waits until a worker of `group` is active on `c`. */
async function workerJoins(c: RmCluster, group: string): Promise<void> {
  const w = await connectWorker({ coordinators: c.addresses, group, nodeId: "n1", connectTimeoutMs: 30_000 });
  cleanups.push(() => w.close());
  await until(
    () => w.assignment,
    (a) => a.phase === "active" && a.running.length === 1,
    30_000,
  );
}

describe("etcd auth", () => {
  it("replicas run as a user whose role allows only <ns>/ and <ns>-data/; a wrong password exits 2 with one line", async () => {
    const etcd = await startEtcdCluster({ size: 1 });
    cleanups.push(() => etcd.stop());
    const endpoint = etcd.endpoints[0] ?? "";
    const ns = "/sec-auth";
    const dir = await mkdtemp(join(tmpdir(), "etcd-auth-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    // The commands docs/security.md shows operators.
    await etcdctl(endpoint, ["user", "add", "root:root-pw", "--interactive=false"]);
    await etcdctl(endpoint, ["role", "add", "shard-replica"]);
    await etcdctl(endpoint, [
      "role",
      "grant-permission",
      "--prefix=true",
      "shard-replica",
      "readwrite",
      `${ns}/`,
    ]);
    await etcdctl(endpoint, [
      "role",
      "grant-permission",
      "--prefix=true",
      "shard-replica",
      "readwrite",
      `${ns}-data/`,
    ]);
    await etcdctl(endpoint, ["user", "add", "replica:replica-pw", "--interactive=false"]);
    await etcdctl(endpoint, ["user", "grant-role", "replica", "shard-replica"]);
    await etcdctl(endpoint, ["auth", "enable"]);
    // The role really is limited: outside the prefix, refused.
    await expect(etcdctl(endpoint, ["put", "/elsewhere", "x"], "replica:replica-pw")).rejects.toThrow(
      /permission denied/,
    );
    const passwordFile = join(dir, "password");
    await writeFile(passwordFile, "replica-pw\n", { mode: 0o600 });
    const wrongFile = join(dir, "wrong");
    await writeFile(wrongFile, "not-it\n", { mode: 0o600 });

    const c = await RmCluster.start({
      etcd: etcd.endpoints,
      namespace: ns,
      args: [...fastFlags, "--etcd-user", "replica", "--etcd-password-file", passwordFile],
    });
    cleanups.push(() => c.stop());
    await workerJoins(c, "g1");
    const status = await etcdctl(
      endpoint,
      ["get", "--prefix", "--keys-only", `${ns}/groups/g1/`],
      "root:root-pw",
    );
    expect(status).toContain(`${ns}/groups/g1/assignment`);
    // The password is in no log line.
    for (const r of c.replicas) expect(r.tail(10_000)).not.toContain("replica-pw");

    const [port, httpPort] = await getFreePorts(2);
    const bad = new RmProcess({
      id: "rm-wrong",
      etcd: etcd.endpoints,
      namespace: ns,
      port: port ?? 0,
      httpPort: httpPort ?? 0,
      args: [...fastFlags, "--etcd-user", "replica", "--etcd-password-file", wrongFile],
    });
    const t0 = performance.now();
    bad.start();
    cleanups.push(() => bad.kill());
    expect(await bad.exited).toBe(2);
    expect(performance.now() - t0).toBeLessThan(15_000);
    const lines = bad.stderr.filter((l) => l.trim() !== "");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/etcd refused the credentials/);
    expect(lines[0]).not.toContain("not-it");

    // The CLI takes the same flags.
    const { stdout } = await run(process.execPath, [
      coordinatorBin,
      "status",
      "--etcd",
      endpoint,
      "--namespace",
      ns,
      "--etcd-user",
      "replica",
      "--etcd-password-file",
      passwordFile,
      "--json",
    ]);
    expect(stdout).toContain("g1");
  });
});

describe("etcd TLS", () => {
  it("replicas reach an etcd that requires client certificates (--etcd-ca, --etcd-cert, --etcd-key)", async () => {
    const ca = await TestCa.create("etcd-ca");
    cleanups.push(() => ca.remove());
    const server = await ca.server("etcd");
    const client = await ca.issue("etcd-client", { cn: "shard-replica", usage: "client" });
    const [clientPort, peerPort] = await getFreePorts(2);
    const url = `https://127.0.0.1:${clientPort}`;
    const dataDir = await mkdtemp(join(tmpdir(), "etcd-tls-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const cmd = withParentDeathSignal("etcd", [
      "--name",
      "tls",
      "--data-dir",
      dataDir,
      "--listen-client-urls",
      url,
      "--advertise-client-urls",
      url,
      "--listen-peer-urls",
      `http://127.0.0.1:${peerPort}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${peerPort}`,
      "--initial-cluster",
      `tls=http://127.0.0.1:${peerPort}`,
      "--cert-file",
      server.certFile,
      "--key-file",
      server.keyFile,
      "--trusted-ca-file",
      ca.ca.certFile,
      "--client-cert-auth",
    ]);
    const child: ChildProcess = spawn(cmd.command, [...cmd.args], { stdio: "ignore" });
    trackChild(child);
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    );
    const tlsArgs = [
      "--etcd-ca",
      ca.ca.certFile,
      "--etcd-cert",
      client.certFile,
      "--etcd-key",
      client.keyFile,
    ];
    await until(
      () =>
        run("etcdctl", [
          `--endpoints=${url}`,
          `--cacert=${ca.ca.certFile}`,
          `--cert=${client.certFile}`,
          `--key=${client.keyFile}`,
          "endpoint",
          "health",
        ]).then(
          () => true,
          () => false,
        ),
      (ok) => ok,
      30_000,
    );
    // Without a client certificate etcd refuses the connection.
    await expect(
      run("etcdctl", [`--endpoints=${url}`, `--cacert=${ca.ca.certFile}`, "--dial-timeout=2s", "get", "x"]),
    ).rejects.toThrow();
    const c = await RmCluster.start({ etcd: [url], namespace: "/sec-tls", args: [...fastFlags, ...tlsArgs] });
    cleanups.push(() => c.stop());
    await workerJoins(c, "g1");
  });
});
