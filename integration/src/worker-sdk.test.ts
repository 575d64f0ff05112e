import { keyLayout, loadShardData, sequentialRecords } from "@org/coordinator";
import { connectWorker, type Worker, type WorkerEvent } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { JobProcess } from "./support/job-process.js";
import { RmCluster } from "./support/rm-cluster.js";
import { fastFlags, useTestEnv } from "./support/test-env.js";

// The SDK against real etcd and 3 real replica processes. Same timing ratios as the
// defaults: session timeout (5 s) well above leader TTL (2 s).
const env = useTestEnv(3);

async function rm(): Promise<RmCluster> {
  const c = await RmCluster.start({ etcd: env.etcd.endpoints, args: fastFlags });
  env.cleanup(() => c.stop());
  return c;
}

/** Connects a worker and records its events with the time they were seen. */
async function worker(
  coordinators: readonly string[],
  nodeId: string,
  group: string,
): Promise<{ w: Worker; events: { at: number; e: WorkerEvent }[] }> {
  const w = await connectWorker({ coordinators, group, nodeId });
  env.cleanup(() => w.close());
  const events: { at: number; e: WorkerEvent }[] = [];
  void (async () => {
    for await (const e of w.events()) events.push({ at: Date.now(), e });
  })();
  return { w, events };
}

async function until(pred: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await pred())) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("@org/worker-sdk against real replicas", () => {
  it("follows a refusing follower to the leader", async () => {
    const c = await rm();
    const leader = await c.waitForLeader();
    const follower = c.replicas.find((r) => r !== leader);
    expect(follower).toBeDefined();
    const { w } = await worker([follower?.address ?? ""], "follow-1", "f");
    expect(w.coordinator).toBe(leader.address);
    await until(() => w.assignment.running.length === 1);
    expect(w.assignment).toMatchObject({ totalShards: 1, shardId: 0, phase: "active" });
  });

  for (const kind of ["SIGKILL", "SIGTERM"] as const) {
    it(`reattaches by itself after leader ${kind}, same version and shards, handlers not restarted`, async () => {
      const c = await rm();
      const group = `fo-${kind}`;
      const ws = [await worker(c.addresses, "a", group), await worker(c.addresses, "b", group)];
      const starts = [0, 0];
      const gate = Promise.all(
        ws.map(({ w }, i) =>
          w.runShards(async (_shard, signal) => {
            starts[i] = (starts[i] ?? 0) + 1;
            await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
          }),
        ),
      );
      await until(() =>
        ws.every(({ w }) => w.assignment.running.length === 1 && w.assignment.phase === "active"),
      );
      const before = ws.map(({ w }) => ({ version: w.assignment.version, shards: w.assignment.shards }));
      const leader = await c.waitForLeader();
      // On a slow machine "b" may join after the rebalance delay of "a"'s version, so "a"
      // may already have restarted its handler once for the second version: what must not
      // happen is a restart caused by the failover, so count from here.
      const startsBefore = [...starts];
      const t0 = Date.now();
      if (kind === "SIGKILL") await leader.kill();
      else await leader.stop();
      await until(
        () => ws.every(({ events }) => events.some((x) => x.at >= t0 && x.e.type === "connected")),
        20_000,
      );
      const reattachMs = ws.map(
        ({ events }) => (events.find((x) => x.at >= t0 && x.e.type === "connected")?.at ?? 0) - t0,
      );
      await new Promise((r) => setTimeout(r, 1000));
      expect(ws.map(({ w }) => ({ version: w.assignment.version, shards: w.assignment.shards }))).toEqual(
        before,
      );
      expect(ws.every(({ w }) => w.assignment.running.length === 1)).toBe(true);
      expect(
        ws.flatMap(({ events }) =>
          events.filter((x) => x.at >= t0 && (x.e.type === "fenced" || x.e.type === "shard_stopped")),
        ),
      ).toEqual([]);
      expect(starts).toEqual(startsBefore);
      expect(startsBefore.every((n) => n >= 1)).toBe(true);
      console.log(`leader ${kind}: workers reattached in ${reattachMs.join(", ")} ms`);
      for (const { w } of ws) await w.close();
      await gate;
    });
  }

  it("close() leaves at once: the shard moves to the remaining worker within the rebalance delay", async () => {
    const c = await rm();
    const leadingSince = performance.now();
    const a = await worker(c.addresses, "stay", "leave");
    const b = await worker(c.addresses, "go", "leave");
    await until(
      () =>
        a.w.assignment.running.length === 1 &&
        b.w.assignment.running.length === 1 &&
        a.w.assignment.totalShards === 2,
    );
    // For one session timeout after it took over, a new leader assumes an earlier incarnation
    // of any node it admits may still run (whatever its predecessor acked), and a version
    // waits for that: measure the leave past it, as in steady operation.
    await new Promise((r) => setTimeout(r, Math.max(0, leadingSince + 5200 - performance.now())));
    const t0 = Date.now();
    await b.w.close();
    await until(() => a.w.assignment.totalShards === 1 && a.w.assignment.running.length === 1, 5000);
    const moveMs = Date.now() - t0;
    expect(moveMs).toBeLessThan(2000); // rebalance delay 300 ms + one handoff; a session timeout is 5000 ms
    expect(a.w.assignment.running).toEqual([0]);
    console.log(`close(): shard moved to the remaining worker in ${moveMs} ms`);
  });

  it("a worker paused past the session timeout fences itself before its shard is given away, then rejoins", async () => {
    const c = await rm();
    const group = "pause";
    await loadShardData(env.client, keyLayout(c.namespace), group, sequentialRecords(40));
    const job = new JobProcess({ node: "paused", group, coordinators: c.addresses, itemMs: 20 });
    env.cleanup(() => job.stop());
    await job.waitFor((e) => e.event === "processed");
    const other = await worker(c.addresses, "other", group);
    // Both hold one shard of 2.
    await job.waitFor((e) => e.event === "shard_started" && e.totalShards === 2, 15_000);
    await until(() => other.w.assignment.totalShards === 2 && other.w.assignment.running.length === 1);
    const tPause = Date.now();
    job.signal("SIGSTOP");
    // The leader expels the silent member and hands everything to `other` (1 shard of 1).
    await until(
      () => other.w.assignment.totalShards === 1 && other.w.assignment.running.length === 1,
      15_000,
    );
    const gained = other.events.find(
      (x) =>
        x.e.type === "assignment" && x.e.assignment.totalShards === 1 && x.e.assignment.running.length === 1,
    );
    expect(gained).toBeDefined();
    const tGain = gained?.at ?? 0;
    expect(tGain - tPause).toBeGreaterThan(4000); // not before the session timeout
    const fromResume = job.events.length;
    job.signal("SIGCONT");
    await job.waitFor((e) => e.event === "fenced", 5000, fromResume);
    // It rejoins and gets a fresh assignment.
    await job.waitFor((e) => e.event === "shard_started", 20_000, fromResume);
    // The timeline: nothing processed by the paused worker between the handoff and its rejoin.
    const rejoinedAt = job.events.slice(fromResume).find((e) => e.event === "shard_started")?.t ?? 0;
    const overlapping = job.events.filter((e) => e.event === "processed" && e.t >= tGain && e.t < rejoinedAt);
    expect(overlapping).toEqual([]);
    const lastBeforePause = job.events.filter((e) => e.event === "processed" && e.t <= tGain).at(-1);
    expect(lastBeforePause?.t ?? 0).toBeLessThan(tGain);
  });
});
