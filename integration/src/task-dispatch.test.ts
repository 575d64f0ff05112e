import { CommandKind, type CoordinatorMessage, TaskState } from "@org/proto";
import { createTaskClient, type TaskClient } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { startCluster, until } from "./support/cluster-helpers.js";
import { RawStream } from "./support/raw-client.js";
import type { RmCluster } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// Tasks through real replicas: a client submits over TaskService, the leader dispatches on
// the HeartbeatStream to raw grpc-js workers that answer exactly what the test says.
const env = useTestEnv(3);

function client(c: RmCluster): TaskClient {
  const t = createTaskClient({ coordinators: c.addresses });
  env.cleanup(() => t.close());
  return t;
}

/** A worker on a raw stream: Hello with `capacity` slots, heartbeats, collects dispatches. */
async function rawWorker(
  address: string,
  group: string,
  nodeId: string,
  opts: { capacity?: number; labels?: Record<string, string> } = {},
): Promise<RawStream & { stop(): void }> {
  const s = new RawStream(address);
  s.hello(group, nodeId, { capacity: opts.capacity ?? 1, labels: opts.labels ?? {} });
  await s.waitFor((m) => m.kind.case === "welcome");
  const beat = setInterval(() => s.heartbeat(nodeId), 400);
  const stop = () => {
    clearInterval(beat);
    s.close();
  };
  env.cleanup(stop);
  return Object.assign(s, { stop });
}

const dispatches = (s: RawStream) =>
  s.received.flatMap((m: CoordinatorMessage) => (m.kind.case === "task" ? [m.kind.value] : []));

function report(
  s: RawStream,
  taskId: string,
  attempt: number,
  state: TaskState,
  extra: Record<string, unknown> = {},
) {
  s.send({ kind: { case: "taskUpdate", value: { taskId, attempt, state, ...extra } } });
}

describe("task dispatch over the HeartbeatStream", () => {
  it("submit -> dispatch -> running -> succeeded, result stored; never beyond a worker's slots", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = await rawWorker(leader.address, "t1", "w-1", { capacity: 2 });
    const tc = client(c);
    await tc.submit("t1", [
      { id: "a", payload: "A" },
      { id: "b", payload: "B" },
      { id: "c", payload: "C" },
    ]);
    await w.waitFor(() => dispatches(w).length === 2);
    // Two slots: the third waits.
    await new Promise((r) => setTimeout(r, 500));
    expect(
      dispatches(w)
        .map((d) => d.taskId)
        .sort(),
    ).toEqual(["a", "b"]);
    const first = dispatches(w)[0];
    if (first === undefined) throw new Error("no dispatch");
    expect(first.attempt).toBe(1);
    expect(new TextDecoder().decode(first.payload)).toBe(first.taskId.toUpperCase());
    report(w, first.taskId, 1, TaskState.RUNNING, { progress: 0.5 });
    report(w, first.taskId, 1, TaskState.SUCCEEDED, { result: new TextEncoder().encode("done") });
    const done = await tc.wait("t1", first.taskId);
    expect(done.state).toBe("succeeded");
    expect(new TextDecoder().decode(done.result)).toBe("done");
    // The freed slot takes the waiting task.
    await w.waitFor(() => dispatches(w).some((d) => d.taskId === "c"));
    // A stale report (wrong attempt) changes nothing.
    const second = dispatches(w)[1];
    if (second === undefined) throw new Error("no second dispatch");
    report(w, second.taskId, 7, TaskState.SUCCEEDED);
    await new Promise((r) => setTimeout(r, 300));
    expect((await tc.get("t1", second.taskId)).state).toBe("dispatched");
  });

  it("a worker that dies mid-task: the task runs again elsewhere only after its session timeout, as attempt 2", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const a = await rawWorker(leader.address, "t2", "a-1");
    const tc = client(c);
    await tc.submit("t2", { id: "job", payload: "x" });
    await a.waitFor(() => dispatches(a).length === 1);
    report(a, "job", 1, TaskState.RUNNING);
    const b = await rawWorker(leader.address, "t2", "b-1");
    const diedAt = Date.now();
    a.stop(); // stream gone, no Leave: expelled after the session timeout
    await b.waitFor(() => dispatches(b).length === 1, 20_000);
    const movedAfter = Date.now() - diedAt;
    expect(dispatches(b)[0]?.attempt).toBe(2);
    // Never before the dead worker's session ran out (it may have been running until then).
    expect(movedAfter).toBeGreaterThanOrEqual(4500);
    report(b, "job", 2, TaskState.SUCCEEDED);
    expect((await tc.wait("t2", "job")).attempt).toBe(2);
  });

  it("cancel of a running task sends CANCEL_TASK; the worker's confirmation finishes it cancelled", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = await rawWorker(leader.address, "t3", "c-1");
    const tc = client(c);
    await tc.submit("t3", { id: "long" });
    await w.waitFor(() => dispatches(w).length === 1);
    report(w, "long", 1, TaskState.RUNNING);
    await until(
      () => tc.get("t3", "long").then((t) => t.state),
      (s) => s === "running",
    );
    await tc.cancel("t3", "long");
    const cmd = await w.waitFor((m) => m.kind.case === "command");
    expect(cmd.kind.case === "command" && cmd.kind.value.kind).toBe(CommandKind.CANCEL_TASK);
    expect(cmd.kind.case === "command" && cmd.kind.value.taskId).toBe("long");
    report(w, "long", 1, TaskState.CANCELLED);
    expect((await tc.wait("t3", "long")).state).toBe("cancelled");
  });

  it("balanced placement honours selectors; a follower refuses TaskService naming the leader", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const gpu = await rawWorker(leader.address, "t4", "gpu-1", { labels: { gpu: "yes" } });
    const cpu = await rawWorker(leader.address, "t4", "cpu-1");
    const tc = client(c);
    await tc.submit("t4", { id: "needs-gpu", selector: { gpu: "yes" } });
    await gpu.waitFor(() => dispatches(gpu).length === 1);
    expect(dispatches(cpu)).toEqual([]);
    // The client goes to a follower first and is redirected: still one task, no error.
    const follower = c.replicas.find((r) => r !== leader);
    if (follower === undefined) throw new Error("no follower");
    const viaFollower = createTaskClient({ coordinators: [follower.address] });
    env.cleanup(() => viaFollower.close());
    expect((await viaFollower.get("t4", "needs-gpu")).worker).toBe("gpu-1");
  });

  it("a task survives a leader failover: the resumed worker claims it and finishes it", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    const w = await rawWorker(leader.address, "t5", "f-1");
    const token = w.received.find((m) => m.kind.case === "welcome");
    const sessionToken = token?.kind.case === "welcome" ? token.kind.value.sessionToken : "";
    const tc = client(c);
    await tc.submit("t5", { id: "keep" });
    await w.waitFor(() => dispatches(w).length === 1);
    report(w, "keep", 1, TaskState.RUNNING);
    await leader.kill();
    const next = await c.waitForLeader({ not: leader });
    w.stop();
    // The same process (same token) reconnects and says it still runs the task.
    const again = new RawStream(next.address);
    env.cleanup(() => again.close());
    again.hello("t5", "f-1", { sessionToken, runningTaskIds: ["keep"] });
    await again.waitFor((m) => m.kind.case === "welcome");
    const beat = setInterval(() => again.heartbeat("f-1"), 400);
    env.cleanup(() => clearInterval(beat));
    report(again, "keep", 1, TaskState.SUCCEEDED);
    const t = await tc.wait("t5", "keep");
    expect(t.state).toBe("succeeded");
    expect(t.attempt).toBe(1);
  }, 60_000);
});
