import { AssignmentPhase, CommandKind } from "@org/proto";
import { describe, expect, it } from "vitest";
import { assignmentOf, runCli, startCluster, until } from "./support/cluster-helpers.js";
import { RawStream } from "./support/raw-client.js";
import type { RmCluster } from "./support/rm-cluster.js";
import { useTestEnv } from "./support/test-env.js";

// Operator switches (<ns>/groups/<g>/control) through the CLI, against real replicas, with
// raw workers that show exactly which commands and views they receive.
const env = useTestEnv(3);

async function cli(c: RmCluster, ...args: string[]): Promise<string> {
  const out = await runCli(env, c.namespace, args);
  expect(out.code, out.stderr).toBe(0);
  return out.stdout;
}

/**
 * A raw worker that behaves like the SDK where the test does not care: it heartbeats, and it
 * releases every pending version it is shown (it runs nothing, so it has nothing to stop).
 */
async function rawWorker(address: string, group: string, nodeId: string): Promise<RawStream> {
  const s = new RawStream(address);
  s.hello(group, nodeId);
  await s.waitFor((m) => m.kind.case === "welcome");
  const released = new Set<bigint>();
  const beat = setInterval(() => {
    s.heartbeat(nodeId);
    for (const m of s.received) {
      const v =
        m.kind.case === "assignment"
          ? m.kind.value
          : m.kind.case === "welcome"
            ? m.kind.value.assignment
            : undefined;
      if (v !== undefined && v.phase === AssignmentPhase.PENDING && !released.has(v.version)) {
        released.add(v.version);
        s.send({ kind: { case: "release", value: { version: v.version } } });
      }
    }
  }, 200);
  env.cleanup(() => {
    clearInterval(beat);
    s.close();
  });
  return s;
}

describe("operator switches", () => {
  it("pause holds versions until resume; drain moves a node's shards away and tells it", async () => {
    const c = await startCluster(env, ["--strategy", "sticky", "--shards", "4"]);
    const leader = await c.waitForLeader();
    await rawWorker(leader.address, "ops", "a");
    const b = await rawWorker(leader.address, "ops", "b");
    const two = await until(
      () => assignmentOf(env, c, "ops"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 2,
    );
    await cli(c, "group", "pause", "--group", "ops");
    await new Promise((r) => setTimeout(r, 300));
    await rawWorker(leader.address, "ops", "c");
    await new Promise((r) => setTimeout(r, 1500)); // well past the rebalance delay
    expect((await assignmentOf(env, c, "ops"))?.version).toBe(two?.version);
    await cli(c, "group", "resume", "--group", "ops");
    const three = await until(
      () => assignmentOf(env, c, "ops"),
      (x) => x?.phase === "active" && Object.keys(x.owners).length === 3,
    );
    expect(three?.version).toBeGreaterThan(two?.version ?? 0);
    // Drain b: a DRAIN command, and a version in which b owns nothing (after it releases).
    // b heard the pause and the resume (every connected member is told).
    const kinds = (m: { kind: { case?: string; value?: unknown } }) =>
      m.kind.case === "command" ? (m.kind.value as { kind: CommandKind }).kind : undefined;
    await b.waitFor((m) => kinds(m) === CommandKind.PAUSE);
    await b.waitFor((m) => kinds(m) === CommandKind.RESUME);
    await cli(c, "drain", "--group", "ops", "--node", "b");
    const cmd = await b.waitFor((m) => kinds(m) === CommandKind.DRAIN);
    expect(cmd.kind.case === "command" && cmd.kind.value.reason).toBe("drained by an operator");
    const drained = await until(
      () => assignmentOf(env, c, "ops"),
      (x) => x !== null && x.version > (three?.version ?? 0) && x.phase === "active",
    );
    expect(drained?.owners.b ?? []).toEqual([]);
    expect(
      Object.values(drained?.owners ?? {})
        .flat()
        .sort(),
    ).toEqual([0, 1, 2, 3]);
  });

  it("a capacity override is sent to the worker and weighs in the next version", async () => {
    const c = await startCluster(env, ["--strategy", "sticky", "--shards", "6"]);
    const leader = await c.waitForLeader();
    await rawWorker(leader.address, "cap", "x");
    const y = await rawWorker(leader.address, "cap", "y");
    await until(
      () => assignmentOf(env, c, "cap"),
      (a) => a?.phase === "active" && (a.owners.y ?? []).length === 3,
    );
    await cli(c, "capacity", "--group", "cap", "--node", "y", "--set", "2");
    const cmd = await y.waitFor((m) => m.kind.case === "command");
    expect(cmd.kind.case === "command" && cmd.kind.value.kind).toBe(CommandKind.SET_CAPACITY);
    expect(cmd.kind.case === "command" && cmd.kind.value.capacity).toBe(2);
    // y gains shards: a version pending on x's release (a raw worker releases when told).
    const p = await until(
      () => assignmentOf(env, c, "cap"),
      (a) => (a?.owners.y ?? []).length === 4,
    );
    expect(p?.owners.x?.length).toBe(2);
  });
});
