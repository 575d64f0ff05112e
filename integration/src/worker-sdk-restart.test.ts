import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { connectWorker, type Worker } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { withParentDeathSignal } from "./harness/parent-death-signal.js";
import { trackChild } from "./harness/process-registry.js";
import { assignmentOf, startCluster, until } from "./support/cluster-helpers.js";
import { datasetJob } from "./support/job-process.js";
import type { RmCluster } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// Planned restarts (static membership) with the SDK: close({ restart: true }) keeps the
// membership for the coordinator's restart grace, so the next process under the same node id
// gets the same shards back with no new version. Real replicas and etcd.
const env = useTestEnv(3);

interface Member {
  w: Worker;
  starts: number;
  run: Promise<void>;
}

async function member(c: RmCluster, nodeId: string, group: string): Promise<Member> {
  const w = await connectWorker({ coordinators: c.addresses, group, nodeId });
  env.cleanup(() => w.close());
  const m: Member = { w, starts: 0, run: Promise.resolve() };
  m.run = w.runShards(async (_shard, signal) => {
    m.starts += 1;
    await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
  });
  return m;
}

describe("planned restarts", () => {
  it("a rolling restart of every worker (close({ restart: true }), then a new process) causes no new version", async () => {
    const c = await startCluster(env);
    const group = "roll";
    const ids = ["roll-0", "roll-1", "roll-2"];
    const members: Member[] = [];
    for (const id of ids) members.push(await member(c, id, group));
    const before = await until(
      () => assignmentOf(env, c, group),
      (a) => a?.phase === "active" && Object.keys(a.owners).length === 3,
    );
    await until(
      () => members.map((m) => m.w.assignment.running.length),
      (r) => r.every((n) => n === 1),
    );
    const gaps: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const old = members[i];
      const id = ids[i] ?? "";
      if (old === undefined) throw new Error("no member");
      const shards = old.w.assignment.shards;
      const t0 = performance.now();
      await old.w.close({ restart: true });
      await old.run;
      // The next process under the same node id: a new incarnation, the same shards at once.
      const next = await member(c, id, group);
      await until(
        () => next.w.assignment,
        (a) => a.running.length === shards.length,
        10_000,
      );
      gaps.push(Math.round(performance.now() - t0));
      expect(next.w.assignment.shards).toEqual(shards);
      expect(next.w.assignment.version).toBe(before?.version);
      expect(next.w.incarnation).toBeGreaterThan(old.w.incarnation);
      members[i] = next;
    }
    const after = await assignmentOf(env, c, group);
    expect(after?.version).toBe(before?.version);
    expect(after?.owners).toEqual(before?.owners);
    // Nobody else was disturbed: each handler started once.
    expect(members.map((m) => m.starts)).toEqual([1, 1, 1]);
    console.log(`rolling restart: 0 new versions; shard back after ${gaps.join(", ")} ms`);
  }, 90_000);

  it("close() without restart leaves: the shards move in a new version", async () => {
    const c = await startCluster(env);
    const a = await member(c, "leave-0", "lv");
    const b = await member(c, "leave-1", "lv");
    const before = await until(
      () => assignmentOf(env, c, "lv"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    await b.w.close();
    const after = await until(
      () => assignmentOf(env, c, "lv"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 1,
    );
    expect(after?.version).toBeGreaterThan(before?.version ?? 0);
    await until(
      () => a.w.assignment.running.length,
      (n) => n === 1,
    );
  });

  it("dataset-job --on-sigterm restart: SIGTERM releases the shards, the next process gets them back, same version", async () => {
    const c = await startCluster(env);
    const group = "job";
    const spawnJob = () => {
      const cmd = withParentDeathSignal(process.execPath, [
        datasetJob,
        "--node",
        "job-0",
        "--group",
        group,
        "--coordinators",
        c.addresses.join(","),
        "--loop",
        "--on-sigterm",
        "restart",
      ]);
      const child = spawn(cmd.command, [...cmd.args], { stdio: ["ignore", "pipe", "pipe"] });
      trackChild(child);
      const events: { event: string; [k: string]: unknown }[] = [];
      createInterface({ input: child.stdout }).on("line", (l) => {
        try {
          events.push(JSON.parse(l) as { event: string });
        } catch {
          // not an event line
        }
      });
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      env.cleanup(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        await exited;
      });
      return { child, events, exited };
    };
    const first = spawnJob();
    await until(
      () => first.events.some((e) => e.event === "shard_started"),
      (ok) => ok,
    );
    const before = await assignmentOf(env, c, group);
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    expect(first.events.find((e) => e.event === "closing")).toMatchObject({ restart: true });
    const second = spawnJob();
    await until(
      () => second.events.some((e) => e.event === "shard_started"),
      (ok) => ok,
    );
    const after = await assignmentOf(env, c, group);
    expect(after?.version).toBe(before?.version);
    // A new incarnation of the same member.
    const incarnation = (events: { event: string; [k: string]: unknown }[]) =>
      Number(events.find((e) => e.event === "joined")?.incarnation);
    expect(incarnation(second.events)).toBe(incarnation(first.events) + 1);
  }, 60_000);
});
