import { createServer } from "node:net";
import { connectWorker, WorkerError, type WorkerEvent } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { getFreePort } from "./harness/free-port.js";
import { startTcpProxy } from "./harness/tcp-proxy.js";
import { startCluster, startWorker, until } from "./support/cluster-helpers.js";
import { RawStream } from "./support/raw-client.js";
import { useTestEnv } from "./support/test-env.js";

// What a worker is told when retrying cannot help, against real replicas (session timeout 5 s).
const env = useTestEnv(3);

/** connectWorker's outcome: the error it rejected with, and how long that took. */
async function refusal(
  options: Parameters<typeof connectWorker>[0],
): Promise<{ error: WorkerError; ms: number; log: Record<string, unknown>[] }> {
  const log: Record<string, unknown>[] = [];
  const t0 = performance.now();
  try {
    const w = await connectWorker({ ...options, onLog: (e) => log.push({ ...e }) });
    await w.close();
    throw new Error("connectWorker resolved");
  } catch (e) {
    if (!(e instanceof WorkerError)) throw e;
    return { error: e, ms: performance.now() - t0, log };
  }
}

describe("refusals retrying cannot fix", () => {
  it("a second process with a live node id is refused at once with already_exists; the first is undisturbed", async () => {
    const c = await startCluster(env);
    const first = await startWorker(env, c, "dup-0", "dup");
    await until(
      () => first.assignment,
      (a) => a.phase === "active" && a.running.length === 1,
    );
    const r = await refusal({ coordinators: c.addresses, group: "dup", nodeId: "dup-0" });
    expect(r.error.code).toBe("already_exists");
    expect(r.error.message).toMatch(/dup-0/);
    expect(r.ms).toBeLessThan(5000); // not the 30 s connect timeout
    expect(first.assignment.running).toEqual([0]);
    console.log(`duplicate node id refused in ${Math.round(r.ms)} ms`);
  });

  it("pointed at a replica's HTTP port: not_coordinator at once", async () => {
    const c = await startCluster(env);
    const httpPort = new URL(c.replicas[0]?.httpUrl ?? "").port;
    const r = await refusal({ coordinators: [`127.0.0.1:${httpPort}`], group: "g", nodeId: "n" });
    expect(r.error.code).toBe("not_coordinator");
    expect(r.error.message).toContain(`127.0.0.1:${httpPort}`);
    expect(r.ms).toBeLessThan(5000);
  });

  it("nothing listening: retried until the connect timeout, whose message names the cause per replica", async () => {
    const port = await getFreePort();
    // A second address whose kernel accepts but nothing answers (a paused process).
    const silent = createServer(() => undefined).listen(0, "127.0.0.1");
    env.cleanup(() => silent.close());
    await new Promise((r) => silent.once("listening", r));
    const silentAddr = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    const r = await refusal({
      coordinators: [`127.0.0.1:${port}`, silentAddr],
      group: "g",
      nodeId: "n",
      connectTimeoutMs: 4000,
    });
    expect(r.error.code).toBe("unavailable");
    expect(r.error.message).toMatch(/no coordinator welcomed us within 4000 ms/);
    expect(r.error.message).toContain(`127.0.0.1:${port}: UNAVAILABLE: connect ECONNREFUSED`);
    expect(r.error.message).toContain(`${silentAddr}: UNRESPONSIVE`);
    // Each failed attempt was logged with its cause.
    expect(r.log.some((l) => l.event === "stream_failed" && l.code === "UNAVAILABLE")).toBe(true);
  });

  it("another process took the node id while this one was cut off: the worker stops its handlers and closes with already_exists", async () => {
    const c = await startCluster(env);
    const leader = await c.waitForLeader();
    // The worker reaches the leader only through a proxy we can cut.
    const [host, port] = leader.address.split(":");
    const proxy = await startTcpProxy({ target: { host: host ?? "", port: Number(port) } });
    env.cleanup(() => proxy.close());
    const w = await startWorker(env, c, "taken", "tk", { coordinators: [proxy.address] });
    const events: WorkerEvent[] = [];
    void (async () => {
      for await (const e of w.events()) events.push(e);
    })();
    let aborted = false;
    const run = w.runShards(async (_shard, signal) => {
      await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
      aborted = true;
    });
    await until(
      () => w.assignment,
      (a) => a.running.length === 1,
    );
    proxy.sever();
    // The leader sees the stream end; an impostor says Hello for the node id without its token.
    // (Refused with ALREADY_EXISTS until the leader has noticed the cut stream: try again.)
    const intruder = await until(
      async () => {
        const s = new RawStream(leader.address);
        env.cleanup(() => s.close());
        s.hello("tk", "taken");
        return s
          .waitFor((m) => m.kind.case === "welcome", 1000)
          .then(
            () => s,
            () => undefined,
          );
      },
      (s) => s !== undefined,
      10_000,
    );
    if (intruder === undefined) throw new Error("unreachable");
    const beat = setInterval(() => intruder.heartbeat("taken"), 400);
    env.cleanup(() => clearInterval(beat));
    proxy.restore();
    const closedWith = await w.closed();
    expect(closedWith).toBeInstanceOf(WorkerError);
    expect((closedWith as WorkerError).code).toBe("already_exists");
    expect(aborted).toBe(true);
    await expect(run).rejects.toMatchObject({ code: "already_exists" });
    const refused = events.find((e) => e.type === "disconnected" && e.code === "ALREADY_EXISTS");
    expect(refused).toBeDefined();
    // Every event carries its time.
    expect(events.every((e) => typeof e.at === "number" && e.at > 0)).toBe(true);
  }, 60_000);
});
