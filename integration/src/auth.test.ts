import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  connectWorker,
  createTaskClient,
  getShardLocations,
  putShardData,
  TaskClientError,
  WorkerError,
} from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { runCli, startCluster, until } from "./support/cluster-helpers.js";
import type { RmCluster } from "./support/rm-cluster.js";
import { type CertPair, TestCa } from "./support/test-certs.js";
import { useTestEnv } from "./support/test-env.js";

// Authorization on real replicas: bearer tokens (--auth tokens) and client certificate
// identities (--auth mtls). Every refusal has its precise code and disturbs nobody else.
const env = useTestEnv(1);

/** Creates a token with the CLI; returns its id and the secret it printed once. */
async function createToken(
  c: RmCluster,
  group: string,
  role: string,
): Promise<{ id: string; token: string }> {
  const r = await runCli(env, c.namespace, ["auth", "token", "create", "--group", group, "--role", role]);
  expect(r.code, r.stderr).toBe(0);
  const token = r.stdout.trim();
  const id = /token ([a-f0-9]{16}) created/.exec(r.stderr)?.[1];
  if (id === undefined) throw new Error(`no token id in ${r.stderr}`);
  return { id, token };
}

/** The rejection of `p` (it must reject). */
async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof WorkerError || e instanceof TaskClientError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error("resolved");
}

/** connectWorker's refusal, closing a worker that was wrongly admitted. */
function refused(options: Parameters<typeof connectWorker>[0]) {
  return rejection(
    connectWorker({ connectTimeoutMs: 20_000, ...options }).then(async (w) => {
      await w.close();
    }),
  );
}

describe("bearer tokens (--auth tokens)", () => {
  it("admits a worker with its group's token; refuses none, wrong, other-group and revoked tokens precisely; never leaks a secret", async () => {
    const c = await startCluster(env, ["--auth", "tokens"]);
    const worker = await createToken(c, "g1", "worker");
    const submit = await createToken(c, "g1", "submit");
    const admin = await createToken(c, "g1", "admin");
    const other = await createToken(c, "g2", "worker");
    const listed = await runCli(env, c.namespace, ["auth", "token", "list", "--group", "g1"]);
    expect(listed.stdout).toContain(worker.id);
    expect(listed.stdout).not.toContain(worker.token);

    const base = { coordinators: c.addresses, group: "g1" };
    const w1 = await connectWorker({ ...base, nodeId: "w1", token: worker.token });
    env.cleanup(() => w1.close());
    const w2 = await connectWorker({ ...base, nodeId: "w2", token: admin.token });
    env.cleanup(() => w2.close());
    for (const w of [w1, w2])
      await until(
        () => w.assignment,
        (a) => a.phase === "active" && a.running.length === 1,
        30_000,
      );
    const version = w1.assignment.version;

    const none = await refused({ ...base, nodeId: "x1" });
    expect(none.code).toBe("unauthenticated");
    expect(none.message).toMatch(/authorization: Bearer/);
    const forged = `${worker.token.slice(0, -4)}AAAA`;
    const wrong = await refused({ ...base, nodeId: "x2", token: forged });
    expect(wrong.code).toBe("unauthenticated");
    expect(wrong.message).not.toContain(forged);
    const elsewhere = await refused({ ...base, nodeId: "x3", token: other.token });
    expect(elsewhere.code).toBe("permission_denied");
    expect(elsewhere.message).toMatch(/group g1/);
    // A submit token cannot join; a worker token cannot submit, nor load data.
    expect((await refused({ ...base, nodeId: "x4", token: submit.token })).code).toBe("permission_denied");
    const asWorker = createTaskClient({ coordinators: c.addresses, token: worker.token });
    env.cleanup(() => asWorker.close());
    expect((await rejection(asWorker.submit("g1", { id: "t1", payload: "p" }))).code).toBe(
      "permission_denied",
    );
    const anonymous = createTaskClient({ coordinators: c.addresses });
    env.cleanup(() => anonymous.close());
    expect((await rejection(anonymous.submit("g1", { id: "t1", payload: "p" }))).code).toBe(
      "unauthenticated",
    );
    expect(
      (
        await rejection(
          putShardData("g1", [{ id: "a", payload: "x" }], { coordinators: c.addresses, token: worker.token }),
        )
      ).code,
    ).toBe("permission_denied");
    const tasks = createTaskClient({ coordinators: c.addresses, token: submit.token });
    env.cleanup(() => tasks.close());
    const t = await tasks.submit("g1", { id: "t1", payload: "p" });
    expect(t.task.id).toBe("t1");
    const put = await putShardData("g1", [{ id: "a", payload: "x" }], {
      coordinators: c.addresses,
      token: admin.token,
    });
    expect(put.received).toBe(1);
    // The CLI's data load goes through a replica too: it needs an admin token.
    const dir = await mkdtemp(join(tmpdir(), "auth-cli-"));
    env.cleanup(() => rm(dir, { recursive: true, force: true }));
    const adminFile = join(dir, "admin-token");
    await writeFile(adminFile, `${admin.token}\n`, { mode: 0o600 });
    const coordinator = ["--coordinator", c.addresses.join(",")];
    const loadArgs = ["data", "load", "--group", "g1", "--count", "10", ...coordinator];
    const loaded = await runCli(env, c.namespace, [...loadArgs, "--token-file", adminFile]);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toMatch(/loaded 10 records/);
    const unloaded = await runCli(env, c.namespace, loadArgs);
    expect(unloaded.code).toBe(1);
    expect(unloaded.stderr).toMatch(/UNAUTHENTICATED|credentials required/);
    const loc = await getShardLocations({
      coordinators: c.addresses,
      group: "g1",
      nodeId: "w1",
      token: worker.token,
    });
    expect(loc.shards).toEqual(w1.assignment.running);
    expect(
      (
        await rejection(
          getShardLocations({ coordinators: c.addresses, group: "g1", nodeId: "w1", token: other.token }),
        )
      ).code,
    ).toBe("permission_denied");

    // Nobody refused disturbed the members: the same version, both running.
    expect(w1.assignment.version).toBe(version);
    expect(w2.assignment.phase).toBe("active");

    // Revocation: the token's open stream ends at once with UNAUTHENTICATED, and the worker
    // stops instead of reconnecting; the other worker is undisturbed.
    const t0 = performance.now();
    const revoked = await runCli(env, c.namespace, [
      "auth",
      "token",
      "revoke",
      "--group",
      "g1",
      "--id",
      worker.id,
    ]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const reason = await w1.closed();
    expect(reason).toBeInstanceOf(WorkerError);
    expect((reason as WorkerError).code).toBe("unauthenticated");
    expect(performance.now() - t0).toBeLessThan(5000);
    expect((await refused({ ...base, nodeId: "w1", token: worker.token })).code).toBe("unauthenticated");
    expect(w2.assignment.phase).toBe("active");

    // Secrets never appear in a log line, in /status or in etcd.
    const leader = await c.waitForLeader();
    const status = JSON.stringify(await leader.status());
    const stored = Object.values(await env.client.getAll().prefix(`${c.namespace}/`).strings()).join("\n");
    const logs = c.replicas.map(
      (r) => `${r.logs.map((l) => JSON.stringify(l)).join("\n")}\n${r.stderr.join("\n")}`,
    );
    for (const secret of [worker.token, submit.token, admin.token, other.token]) {
      // The secret is everything after `shd_<id>_` (base64url: it may contain "_" itself).
      const part = secret.split("_").slice(2).join("_");
      expect(part.length).toBeGreaterThanOrEqual(40);
      expect(status).not.toContain(part);
      expect(stored).not.toContain(part);
      for (const l of logs) expect(l).not.toContain(part);
    }
    expect(stored).toContain(`"hash"`);
  });
});

describe("client certificate identities (--auth mtls)", () => {
  it("binds a certificate to its group and node id, and task submission to shard-submit://", async () => {
    const ca = await TestCa.create();
    env.cleanup(() => ca.remove());
    const server = await ca.server();
    const c = await startCluster(env, [
      "--tls-cert",
      server.certFile,
      "--tls-key",
      server.keyFile,
      "--tls-client-ca",
      ca.ca.certFile,
      "--auth",
      "mtls",
    ]);
    const tls = (p: CertPair) => ({ ca: ca.ca.cert, cert: p.cert, key: p.key, serverName: "localhost" });
    const base = { coordinators: c.addresses, group: "g1" };
    const w1cert = await ca.issue("w1", { cn: "w1", san: ["URI:shard://g1/w1"], usage: "client" });
    const anyCert = await ca.issue("any", { cn: "any", san: ["URI:shard://g1/*"], usage: "client" });
    const cnCert = await ca.issue("cn", { cn: "g1/w3", usage: "client" });
    const g2cert = await ca.issue("g2", { cn: "g2", san: ["URI:shard://g2/w1"], usage: "client" });
    const submitCert = await ca.issue("submitter", {
      cn: "s",
      san: ["URI:shard-submit://g1"],
      usage: "client",
    });

    const w1 = await connectWorker({ ...base, nodeId: "w1", tls: tls(w1cert) });
    env.cleanup(() => w1.close());
    const w2 = await connectWorker({ ...base, nodeId: "w2", tls: tls(anyCert) });
    env.cleanup(() => w2.close());
    const w3 = await connectWorker({ ...base, nodeId: "w3", tls: tls(cnCert) });
    env.cleanup(() => w3.close());
    for (const w of [w1, w2, w3])
      await until(
        () => w.assignment,
        (a) => a.phase === "active" && a.running.length === 1,
        30_000,
      );
    const version = w1.assignment.version;

    const otherNode = await refused({ ...base, nodeId: "w9", tls: tls(w1cert) });
    expect(otherNode.code).toBe("permission_denied");
    expect(otherNode.message).toMatch(/as node w9/);
    expect((await refused({ ...base, nodeId: "w1", tls: tls(g2cert) })).code).toBe("permission_denied");
    const asWorker = createTaskClient({ coordinators: c.addresses, tls: tls(w1cert) });
    env.cleanup(() => asWorker.close());
    expect((await rejection(asWorker.submit("g1", { id: "t1", payload: "p" }))).code).toBe(
      "permission_denied",
    );
    const submitter = createTaskClient({ coordinators: c.addresses, tls: tls(submitCert) });
    env.cleanup(() => submitter.close());
    expect((await submitter.submit("g1", { id: "t1", payload: "p" })).task.id).toBe("t1");
    expect(
      (
        await rejection(
          getShardLocations({ coordinators: c.addresses, group: "g1", nodeId: "w2", tls: tls(w1cert) }),
        )
      ).code,
    ).toBe("permission_denied");
    expect(w1.assignment.version).toBe(version);
    for (const w of [w1, w2, w3]) expect(w.assignment.phase).toBe("active");
  });
});
