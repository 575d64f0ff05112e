import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EtcdCluster, startEtcdCluster } from "./harness/etcd-cluster.js";
import { RmCluster } from "./support/rm-cluster.js";

// A closed replica or worker must leave no timer, socket or stream behind: the probe
// process reports its active resources after close() and must then exit on its own.
const probe = fileURLToPath(new URL("../dist/support/leak-probe.js", import.meta.url));

interface ProbeResult {
  code: number | null;
  lines: { phase: string; resources: string[] }[];
  stderr: string;
  /** From the "closed" report to the process's own exit. */
  exitAfterCloseMs: number;
}

function runProbe(args: string[]): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let closedAt = Number.NaN;
    const child = spawn(process.execPath, [probe, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"phase":"closed"') && Number.isNaN(closedAt)) closedAt = performance.now();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("exit", (code) => {
      clearTimeout(killer);
      const lines = out
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { phase: string; resources: string[] });
      resolve({ code, lines, stderr: err, exitAfterCloseMs: performance.now() - closedAt });
    });
  });
}

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await startEtcdCluster({ size: 1 });
});
afterAll(async () => {
  await etcd?.stop();
});

// Sockets, servers and HTTP/2 sessions must all be gone; what may remain for a moment are
// the probe's own stdio pipes and already-expired or unref'd timers, so the final proof is
// that the process exits by itself right away.
const handles = (r: ProbeResult) =>
  r.lines
    .at(-1)
    ?.resources.filter((x) => !["PipeWrap", "SimpleShutdownWrap", "Timeout", "Immediate"].includes(x));

describe("lifecycles leave nothing running", () => {
  it("Replica.close() (as leader) releases every handle; the process exits by itself", async () => {
    const r = await runProbe(["replica", etcd.endpoints.join(",")]);
    expect(r.stderr).toBe("");
    expect(r.lines[0]?.phase).toBe("running:leader");
    expect(r.lines.at(-1)?.phase).toBe("closed");
    expect(handles(r)).toEqual([]);
    expect(r.code).toBe(0); // exited naturally, not killed by the 20 s guard
    expect(r.exitAfterCloseMs).toBeLessThan(2000);
  });

  it("the HTTP server's close() ends open console streams; the process exits by itself", async () => {
    const r = await runProbe(["console", etcd.endpoints.join(",")]);
    expect(r.stderr).toBe("");
    expect(r.lines[0]?.phase).toBe("running:leader:2");
    expect(r.lines.at(-1)?.phase).toBe("closed");
    expect(handles(r)).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.exitAfterCloseMs).toBeLessThan(2000);
  });

  it("Worker.close() after runShards releases every handle; the process exits by itself", async () => {
    const rm = await RmCluster.start({ etcd: etcd.endpoints, count: 1 });
    try {
      const leader = await rm.waitForLeader();
      const r = await runProbe(["worker", leader.address]);
      expect(r.stderr).toBe("");
      expect(r.lines[0]?.phase).toBe("running:1");
      expect(r.lines.at(-1)?.phase).toBe("closed");
      expect(handles(r)).toEqual([]);
      expect(r.code).toBe(0);
      expect(r.exitAfterCloseMs).toBeLessThan(2000);
    } finally {
      await rm.stop();
    }
  });
});
