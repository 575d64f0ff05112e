import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { status } from "@grpc/grpc-js";
import { connectWorker } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { getFreePorts, startTcpProxy, type TcpProxy } from "./harness/index.js";
import { readAssignment } from "./support/coordinator-state.js";
import { RawStream } from "./support/raw-client.js";
import { coordinatorBin, RmProcess } from "./support/rm-cluster.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// A replica whose etcd cannot be reached must say so: both listeners up at once, /readyz
// not ready with the reason, one log line per retry at a steady pace, worker streams
// refused with the reason; and once etcd answers it leads as usual. Real processes, real
// etcd (reached later through a loopback proxy that starts listening on the address the
// replica was given, which to the replica is etcd coming up).
const env = useTestEnv(1);

async function replica(etcd: string[], id: string): Promise<RmProcess> {
  const [port, httpPort] = await getFreePorts(2);
  const r = new RmProcess({
    id,
    etcd,
    namespace: `/unreachable-${id}-${process.pid}`,
    port: port ?? 0,
    httpPort: httpPort ?? 0,
    args: fastFlags,
  });
  r.start();
  env.cleanup(() => r.kill());
  return r;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, body: await res.text() };
}

async function until<T>(fn: () => Promise<T>, pred: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (pred(v)) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (performance.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms; last: ${JSON.stringify(String(last))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `coordinator status` and reports its exit code, stderr and how long it took. */
function statusCommand(etcd: string): Promise<{ code: number | null; stderr: string; ms: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(process.execPath, [coordinatorBin, "status", "--etcd", etcd], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    // A hang is the failure this guards against; 20 s is far beyond what a pass needs.
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("exit", (code) => {
      clearTimeout(killer);
      resolve({ code, stderr, ms: performance.now() - started });
    });
  });
}

describe("a replica that cannot reach etcd", () => {
  // Two ways etcd can be unreachable: nothing listens (connection refused at once), and a
  // silent peer (TCP accepted, no byte ever answered: each call runs into its deadline).
  it.each(["refused", "silent"] as const)(
    "(%s) listens at once, is alive but not ready, refuses streams with the reason, and logs each retry",
    async (how) => {
      let etcd: string;
      if (how === "refused") {
        const [dead] = await getFreePorts(1);
        etcd = `http://127.0.0.1:${dead}`;
      } else {
        const proxy = await startTcpProxy({ target: { host: "127.0.0.1", port: 1 } });
        env.cleanup(() => proxy.close());
        proxy.blackhole();
        etcd = proxy.url;
      }
      const r = await replica([etcd], `rm-${how}`);
      // Both listeners come up without etcd.
      await r.waitForLog((l) => l.event === "http_listening", 10_000);
      await r.waitForLog((l) => l.event === "grpc_listening", 10_000);
      expect((await get(`${r.httpUrl}/healthz`)).status).toBe(200);
      const ready = await until(
        () => get(`${r.httpUrl}/readyz`),
        (x) => x.body.includes("etcd unreachable"),
      );
      expect(ready.status).toBe(503);
      expect(ready.body).toContain(etcd);
      expect(ready.body).toContain("unavailable");

      const st = (await (await fetch(`${r.httpUrl}/status`)).json()) as {
        role: string;
        etcd: { state: string; endpoints: string[]; lastError: { kind: string } | null };
        leaderWatch: string;
      };
      expect(st.role).toBe("follower");
      expect(st.etcd.state).toBe("unreachable");
      expect(st.etcd.endpoints).toEqual([etcd]);
      expect(st.etcd.lastError?.kind).toBe("unavailable");
      expect(st.leaderWatch).toBe("retrying");

      const s = new RawStream(r.address);
      env.cleanup(() => s.close());
      s.hello("g1", "w-early");
      const ended = await s.ended;
      expect(ended.code).toBe(status.UNAVAILABLE);
      expect(ended.details).toContain("cannot serve until it reaches etcd");
      expect(ended.metadata.get("x-shard-leader")).toEqual([""]);

      // Each failure: one line with the kind and the delay before the next retry. The
      // campaign loop backs off (about 1, 2, 4, 5, 5 s), so a few seconds give a handful of
      // lines, never a flood.
      const since = performance.now();
      await r.waitForLog(
        (l) => l.event === "campaign_failed" && l.at > since && l.retryInMs !== undefined,
        15_000,
      );
      await new Promise((res) => setTimeout(res, 6000));
      const failures = r.logs.filter((l) => l.event === "campaign_failed");
      expect(failures.length).toBeGreaterThanOrEqual(2);
      expect(failures.length).toBeLessThan(15);
      for (const l of failures) {
        expect(l.kind).toBe("unavailable");
        expect(typeof l.retryInMs).toBe("number");
        expect(l.retryInMs as number).toBeLessThanOrEqual(5000);
        expect(typeof l.err).toBe("string");
      }
      expect(r.logs.some((l) => l.event === "etcd_unreachable")).toBe(true);
      expect(r.running).toBe(true);
    },
  );

  it("leads normally once etcd comes up on the address it was given", async () => {
    const [port] = await getFreePorts(1);
    const etcd = `http://127.0.0.1:${port}`;
    const r = await replica([etcd], "rm-later");
    await until(
      () => get(`${r.httpUrl}/readyz`),
      (x) => x.status === 503 && x.body.includes("etcd unreachable"),
    );
    await r.waitForLog((l) => l.event === "campaign_failed", 10_000);

    const member = new URL(env.etcd.endpoints[0] ?? "");
    const proxy: TcpProxy = await startTcpProxy({
      target: { host: member.hostname, port: Number(member.port) },
      listenPort: port,
    });
    env.cleanup(() => proxy.close());

    // The backoff is at most 5 s, so etcd is found again within one retry.
    await r.waitForLog((l) => l.event === "etcd_connected", 15_000);
    await until(
      () => r.status(),
      (x) => x.role === "leader",
    );
    expect((await get(`${r.httpUrl}/readyz`)).status).toBe(200);

    const w = await connectWorker({ coordinators: [r.address], group: "g1", nodeId: "w-1" });
    env.cleanup(() => w.close());
    const a = await until(
      () => readAssignment(env.client, r.options.namespace, "g1"),
      (x) => x?.phase === "active" && x.owners["w-1"] !== undefined,
    );
    expect(a?.owners).toEqual({ "w-1": [0] });
  });
});

describe("coordinator status against an unreachable etcd", () => {
  it("fails within a few seconds with one clear line and exit code 1", async () => {
    const [dead] = await getFreePorts(1);
    const refused = await statusCommand(`http://127.0.0.1:${dead}`);
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toMatch(
      /^coordinator: cannot read the status from etcd at http:\/\/127\.0\.0\.1:\d+: unavailable: /,
    );

    const proxy = await startTcpProxy({ target: { host: "127.0.0.1", port: 1 } });
    env.cleanup(() => proxy.close());
    proxy.blackhole();
    const silent = await statusCommand(proxy.url);
    expect(silent.code, silent.stderr).toBe(1);
    expect(silent.stderr.trim().split("\n")).toHaveLength(1);
    expect(silent.stderr).toContain("unavailable: 4 DEADLINE_EXCEEDED");
  });
});

describe("closing a replica that cannot reach etcd", () => {
  it("stops every retry loop: no timer is left and the process exits by itself", async () => {
    // The lifecycle probe (see lifecycle.test.ts) starts a replica in-process, closes it and
    // reports the event loop's resources; a clean close() lets the process exit alone.
    const probe = fileURLToPath(new URL("../dist/support/leak-probe.js", import.meta.url));
    const [dead] = await getFreePorts(1);
    const r = await new Promise<{ code: number | null; out: string; err: string; exitAfterCloseMs: number }>(
      (resolve) => {
        const child = spawn(process.execPath, [probe, "replica", `http://127.0.0.1:${dead}`], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        let closedAt = Number.NaN;
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes('"phase":"closed"') && Number.isNaN(closedAt)) closedAt = performance.now();
        });
        child.stderr.on("data", (d: Buffer) => {
          err += d.toString();
        });
        const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
        child.on("exit", (code) => {
          clearTimeout(killer);
          resolve({ code, out, err, exitAfterCloseMs: performance.now() - closedAt });
        });
      },
    );
    const lines = r.out
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { phase: string; resources: string[] });
    expect(r.err).toBe("");
    // It waited for a leadership that never came: the campaign and the leader watch were
    // sleeping between retries when close() ran.
    expect(lines[0]?.phase).toBe("running:follower");
    expect(lines.at(-1)?.phase).toBe("closed");
    // No timer of any retry loop survives close(). (The gRPC listener's own handle may
    // still be finishing its close at that instant; the natural exit below proves it does.)
    expect(lines.at(-1)?.resources.filter((x) => x !== "TCPServerWrap" && x !== "PipeWrap")).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.exitAfterCloseMs).toBeLessThan(2000);
  });
});
