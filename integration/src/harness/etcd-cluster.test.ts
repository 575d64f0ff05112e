import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import { afterEach, describe, expect, it } from "vitest";
import { type EtcdCluster, type EtcdMember, EtcdMemberStateError, startEtcdCluster } from "./index.js";
import { readProcessState } from "./proc-state.js";
import { isProcessAlive, TEMP_DIR_PREFIX } from "./process-registry.js";

const clusters: EtcdCluster[] = [];
const clients: Etcd3[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(clusters.splice(0).map((cluster) => cluster.stop()));
});

async function cluster(size: 1 | 3, name: string): Promise<EtcdCluster> {
  const started = await startEtcdCluster({ size, name });
  clusters.push(started);
  return started;
}

/** A client pinned to the given members, closed after the test (which also cancels pending calls). */
function clientFor(...members: EtcdMember[]): Etcd3 {
  const client = new Etcd3({ hosts: members.map((member) => member.clientUrl) });
  clients.push(client);
  return client;
}

async function put(client: Etcd3, key: string, value: string, deadlineMs = 10_000): Promise<void> {
  await client
    .put(key)
    .value(value)
    .options({ deadline: Date.now() + deadlineMs });
}

function get(client: Etcd3, key: string, deadlineMs = 10_000): Promise<string | null> {
  return client
    .get(key)
    .options({ deadline: Date.now() + deadlineMs })
    .string();
}

/** Asserts that a put cannot complete: it must fail, and within its deadline rather than hang. */
async function expectPutToFail(client: Etcd3, key: string, deadlineMs: number): Promise<void> {
  const startedAt = Date.now();
  await expect(put(client, key, "never", deadlineMs)).rejects.toThrow();
  expect(Date.now() - startedAt).toBeLessThan(deadlineMs + 2_000);
}

function harnessDirsNamed(name: string): string[] {
  return readdirSync(tmpdir()).filter((entry) =>
    entry.startsWith(`${TEMP_DIR_PREFIX}${process.pid}-${name}-`),
  );
}

/** Pids of live etcd processes this test process spawned for members of cluster `name`. */
function etcdChildrenNamed(name: string): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const parentPid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        return parentPid === process.pid && args[args.indexOf("--name") + 1]?.startsWith(`${name}-`);
      } catch {
        return false; // exited while we looked
      }
    })
    .map(Number);
}

function member(from: EtcdCluster, index: number): EtcdMember {
  const found = from.members[index];
  if (found === undefined) throw new Error(`cluster has no member ${index}`);
  return found;
}

describe("startEtcdCluster (binary provider)", () => {
  it("starts a healthy 1-member cluster that serves put/get", async () => {
    const etcd = await cluster(1, "single");

    expect(etcd.provider).toBe("binary");
    expect(etcd.endpoints).toHaveLength(1);
    expect(etcd.endpoints[0]).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const only = member(etcd, 0);
    expect(only.running).toBe(true);
    expect(only.pid).toBeTypeOf("number");
    expect(isProcessAlive(only.pid ?? -1)).toBe(true);

    const client = clientFor(only);
    await put(client, "greeting", "hello");
    expect(await get(client, "greeting")).toBe("hello");
  });

  it("keeps a 3-member cluster writable with one member killed, and the restarted member catches up", async () => {
    const etcd = await cluster(3, "three");
    expect(etcd.endpoints).toHaveLength(3);
    expect(new Set(etcd.endpoints).size).toBe(3);
    const [first, , victim] = [member(etcd, 0), member(etcd, 1), member(etcd, 2)];

    const client = clientFor(first);
    await put(client, "before", "1");
    expect(await get(client, "before")).toBe("1");

    const oldPid = victim.pid;
    await victim.kill();
    expect(victim.running).toBe(false);
    expect(victim.pid).toBeUndefined();
    expect(isProcessAlive(oldPid ?? -1)).toBe(false);

    await put(client, "during", "2");
    expect(await get(client, "during")).toBe("2");

    await victim.restart();
    expect(victim.running).toBe(true);
    expect(victim.pid).not.toBe(oldPid);
    // A linearizable read served by the restarted member: it rejoined and has the
    // write it missed, from its kept data dir plus replication.
    const restartedClient = clientFor(victim);
    expect(await get(restartedClient, "before")).toBe("1");
    expect(await get(restartedClient, "during")).toBe("2");
    await put(restartedClient, "after", "3");
    expect(await get(client, "after")).toBe("3");
  });

  it("rejects writes after losing quorum to killed members, and recovers once they restart", async () => {
    const etcd = await cluster(3, "quorum-kill");
    const [survivor, second, third] = [member(etcd, 0), member(etcd, 1), member(etcd, 2)];
    await put(clientFor(survivor), "k", "before");

    await Promise.all([second.kill(), third.kill()]);
    await expectPutToFail(clientFor(survivor), "k", 1_500);

    await Promise.all([second.restart(), third.restart()]);
    await etcd.waitHealthy();
    // A fresh client: the old one's per-host circuit breaker may still be open.
    const client = clientFor(survivor);
    await put(client, "k", "after");
    expect(await get(clientFor(third), "k")).toBe("after");
  });

  it("rejects writes while a majority is paused, and recovers on resume", async () => {
    const etcd = await cluster(3, "quorum-pause");
    const [survivor, second, third] = [member(etcd, 0), member(etcd, 1), member(etcd, 2)];
    await put(clientFor(survivor), "k", "before");

    second.pause();
    third.pause();
    expect(second.running && second.paused && third.paused).toBe(true);
    await expectPutToFail(clientFor(survivor), "k", 1_500);

    second.resume();
    third.resume();
    expect(second.paused || third.paused).toBe(false);
    await etcd.waitHealthy();
    await put(clientFor(survivor), "k", "after");
    expect(await get(clientFor(second), "k")).toBe("after");
  });

  it("pauses and resumes a single member while the others keep serving", async () => {
    const etcd = await cluster(3, "pause-one");
    const [first, frozen] = [member(etcd, 0), member(etcd, 1)];
    const frozenPid = frozen.pid ?? -1;

    frozen.pause();
    expect(frozen.paused).toBe(true);
    expect(frozen.running).toBe(true);
    expect(readProcessState(frozenPid)).toBe("T");
    // The frozen member accepts TCP connections (the kernel does that) but answers nothing.
    await expect(get(clientFor(frozen), "k", 1_000)).rejects.toThrow();
    // The rest of the cluster still has quorum, even if the frozen member was the leader.
    await put(clientFor(first), "k", "written-while-frozen");

    frozen.resume();
    expect(frozen.paused).toBe(false);
    expect(readProcessState(frozenPid)).not.toBe("T");
    await frozen.waitHealthy();
    expect(await get(clientFor(frozen), "k")).toBe("written-while-frozen");
  });

  it("leaves no process and no temp dir behind after stop(), even with a paused member", async () => {
    const etcd = await cluster(3, "cleanup");
    const pids = etcd.members.map((m) => m.pid);
    expect(pids.every((pid) => typeof pid === "number" && isProcessAlive(pid))).toBe(true);
    expect(harnessDirsNamed("cleanup")).toHaveLength(3);
    member(etcd, 1).pause();

    await etcd.stop();

    for (const pid of pids) {
      expect(() => process.kill(pid ?? -1, 0)).toThrow(expect.objectContaining({ code: "ESRCH" }));
    }
    expect(etcd.members.map((m) => m.running)).toEqual([false, false, false]);
    expect(harnessDirsNamed("cleanup")).toEqual([]);
    // Idempotent: a second stop (as afterEach does) is a no-op.
    await expect(etcd.stop()).resolves.toBeUndefined();
    // Its data dirs are gone, so bringing a member back would found a different cluster.
    await expect(member(etcd, 0).restart()).rejects.toThrow(EtcdMemberStateError);
  });

  it("keeps member logs in logDir after stop() when asked to", async () => {
    const logDir = await mkdtemp(join(tmpdir(), "etcd-harness-logs-"));
    try {
      const etcd = await startEtcdCluster({ name: "logged", logDir });
      const client = clientFor(member(etcd, 0));
      await put(client, "k", "v");
      client.close();
      await etcd.stop();

      const logs = readdirSync(logDir);
      expect(logs).toHaveLength(1);
      expect(logs[0]).toMatch(/^logged-0\..+\.log$/);
      const text = readFileSync(join(logDir, logs[0] ?? ""), "utf8");
      expect(text).toContain("ready to serve client requests");
      expect(harnessDirsNamed("logged")).toEqual([]);
    } finally {
      await rm(logDir, { recursive: true, force: true });
    }
  });

  it("stops the cluster at the end of an `await using` block", async () => {
    let pid: number | undefined;
    {
      await using etcd = await startEtcdCluster({ name: "disposable" });
      pid = member(etcd, 0).pid;
      expect(isProcessAlive(pid ?? -1)).toBe(true);
    }
    expect(isProcessAlive(pid ?? -1)).toBe(false);
    expect(harnessDirsNamed("disposable")).toEqual([]);
  });

  it("cleans up everything it started when the start is aborted", async () => {
    const controller = new AbortController();
    const reason = new Error("test gave up");
    const starting = startEtcdCluster({ size: 3, name: "aborted", signal: controller.signal });
    // Abort once the members exist, i.e. while the start waits for them to be healthy.
    await expect.poll(() => etcdChildrenNamed("aborted").length, { timeout: 5_000, interval: 5 }).toBe(3);
    controller.abort(reason);

    await expect(starting).rejects.toBe(reason);
    expect(etcdChildrenNamed("aborted")).toEqual([]);
    expect(harnessDirsNamed("aborted")).toEqual([]);
  });
});
