import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { assignmentOf, runCli, startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { coordinatorBin } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// The operator's read-only commands against real replicas: they find the leader in etcd and
// read its live view (members' connection, last heard, running shards), not etcd alone.
const env = useTestEnv(1);

describe("operator CLI", () => {
  it("groups, members and shards read the leader's view; an unknown group is one line and exit 1", async () => {
    const c = await startCluster(env, ["--strategy", "sticky", "--shards", "4"]);
    await startWorker(env, c, "w-a", "g1", { labels: { zone: "a" } });
    await startWorker(env, c, "w-b", "g1");
    const active = await until(
      () => assignmentOf(env, c),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 2,
      30_000,
    );
    const ns = c.namespace;
    const groups = await runCli(env, ns, ["groups"]);
    expect(groups.code).toBe(0);
    expect(groups.stdout).toMatch(
      new RegExp(`^g1\\s+sticky\\s+${active?.version}\\s+active\\s+4\\s+2\\s+2`, "m"),
    );
    const members = await runCli(env, ns, ["members", "--group", "g1", "--json"]);
    expect(members.code).toBe(0);
    const list = JSON.parse(members.stdout) as {
      nodeId: string;
      connected: boolean;
      labels: Record<string, string>;
    }[];
    expect(list.map((m) => [m.nodeId, m.connected])).toEqual([
      ["w-a", true],
      ["w-b", true],
    ]);
    expect(list[0]?.labels).toEqual({ zone: "a" });
    const table = await runCli(env, ns, ["members", "--group", "g1"]);
    expect(table.stdout).toMatch(/^NODE\s+STATE\s+CONNECTED\s+LAST HEARD/m);
    expect(table.stdout).toMatch(/^w-a\s+active\s+yes\s+\d+\.\ds ago/m);
    const shards = await runCli(env, ns, ["shards", "--group", "g1", "--json"]);
    const s = JSON.parse(shards.stdout) as { owners: string[]; phase: string };
    expect(s.phase).toBe("active");
    expect(s.owners).toHaveLength(4);
    expect([...new Set(s.owners)].sort()).toEqual(["w-a", "w-b"]);
    const missing = await runCli(env, ns, ["members", "--group", "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    expect(missing.stderr).toContain('no group "nope"');
  });

  it("watch prints the leader and members joining as plain lines, and follows a failover", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const child = spawn(
      process.execPath,
      [coordinatorBin, "watch", "--etcd", env.etcd.endpoints.join(","), "--namespace", c.namespace],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    env.cleanup(async () => {
      child.kill("SIGKILL");
      await exited;
    });
    const lines: string[] = [];
    let raw = "";
    child.stdout.on("data", (b: Buffer) => {
      raw += b.toString();
    });
    createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
    await until(
      () => [...lines],
      (ls) => ls.some((l) => l.includes(`leader ${leader.id} (epoch`)),
      20_000,
    );
    await startWorker(env, c, "w-c");
    await until(
      () => [...lines],
      (ls) => ls.some((l) => l.endsWith("group g1 member w-c joined")),
      20_000,
    );
    await leader.kill();
    const next = await c.waitForLeader({ not: leader, timeoutMs: 30_000 });
    await until(
      () => [...lines],
      (ls) => ls.some((l) => l.includes(`leader ${next.id} (epoch`)),
      30_000,
    );
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(raw).not.toContain("\x1b");
    for (const l of lines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\S+Z /);
  });
  it("group config set is validated and applied by the leader at once; leader step-down hands over without a version", async () => {
    const c = await startCluster(env, ["--strategy", "modulo"]);
    const w1 = await startWorker(env, c, "cfg-1", "gc");
    await startWorker(env, c, "cfg-2", "gc");
    const first = await until(
      () => assignmentOf(env, c, "gc"),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 2,
      30_000,
    );
    expect(first?.totalShards).toBe(2);
    const ns = c.namespace;
    const bad = await runCli(env, ns, [
      "group",
      "config",
      "set",
      "--group",
      "gc",
      "--strategy",
      "round-robin",
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    const set = await runCli(env, ns, [
      "group",
      "config",
      "set",
      "--group",
      "gc",
      "--strategy",
      "sticky",
      "--shards",
      "8",
    ]);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({ strategy: "sticky", shards: 8 });
    // No membership change: the leader applies it from its watch.
    const reshaped = await until(
      () => assignmentOf(env, c, "gc"),
      (a) => a?.phase === "active" && a.totalShards === 8,
      15_000,
    );
    expect(reshaped?.strategy).toBe("sticky");
    const get = await runCli(env, ns, ["group", "config", "get", "--group", "gc"]);
    expect(JSON.parse(get.stdout)).toEqual({ strategy: "sticky", shards: 8 });

    const typo = await runCli(env, ns, ["stauts"]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain("did you mean status?");
    const help = await runCli(env, ns, ["--help"]);
    expect(help.stdout).toContain("Replica flags");
    expect(help.stdout).toContain("--session-timeout");

    const leader = await c.waitForLeader();
    const down = await runCli(env, ns, ["leader", "step-down", "--json"]);
    expect(down.code, down.stderr).toBe(0);
    const body = JSON.parse(down.stdout) as { steppedDown: string; successor: string };
    expect(body.steppedDown).toBe(leader.id);
    const next = await c.waitForLeader({ not: leader });
    expect(body.successor).toBe(next.address);
    expect(leader.running).toBe(true);
    // The workers follow without a new version.
    await until(
      () => w1.coordinator,
      (a) => a === next.address,
      15_000,
    );
    expect((await assignmentOf(env, c, "gc"))?.version).toBe(reshaped?.version);
  });
});
