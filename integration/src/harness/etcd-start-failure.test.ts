import { readdirSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EtcdPortInUseError, EtcdStartError, startEtcdCluster, TEMP_DIR_PREFIX } from "./index.js";

/**
 * These tests put a fake `etcd` first on PATH to make start-up fail in controlled
 * ways. Vitest runs integration files one at a time, and PATH is restored after
 * each test, so other files still get the real binary.
 */
let fakeBinDir: string;
let originalPath: string | undefined;

beforeEach(async () => {
  fakeBinDir = await mkdtemp(join(tmpdir(), "fake-etcd-bin-"));
  originalPath = process.env.PATH;
  process.env.PATH = `${fakeBinDir}:${originalPath ?? ""}`;
});

afterEach(async () => {
  process.env.PATH = originalPath;
  await rm(fakeBinDir, { recursive: true, force: true });
});

/** Installs a fake `etcd` that records each invocation in `calls` and then runs `body`. */
async function installFakeEtcd(body: string): Promise<string> {
  const calls = join(fakeBinDir, "calls");
  await writeFile(join(fakeBinDir, "etcd"), `#!/bin/sh\necho "$*" >> "${calls}"\n${body}\n`);
  await chmod(join(fakeBinDir, "etcd"), 0o755);
  return calls;
}

async function invocations(calls: string): Promise<string[]> {
  return (await readFile(calls, "utf8")).trim().split("\n");
}

function harnessDirsNamed(name: string): string[] {
  return readdirSync(tmpdir()).filter((entry) =>
    entry.startsWith(`${TEMP_DIR_PREFIX}${process.pid}-${name}-`),
  );
}

describe("startEtcdCluster start-up failures", () => {
  it("fails fast with a typed error that carries the member's own output", async () => {
    const calls = await installFakeEtcd('echo "fake etcd: simulated corrupt WAL" >&2\nexit 3');

    const startedAt = Date.now();
    const failure = startEtcdCluster({ name: "broken" });

    await expect(failure).rejects.toThrow(EtcdStartError);
    await expect(failure).rejects.toThrow(/broken-0 exited \(code 3\)[\s\S]*simulated corrupt WAL/);
    await expect(failure).rejects.not.toThrow(EtcdPortInUseError);
    // Noticed as soon as the process died, not after the start timeout.
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    // The flags the harness relies on reached etcd.
    const [args] = await invocations(calls);
    expect(args).toContain("--name broken-0");
    expect(args).toContain("--initial-cluster-state new");
    expect(args).toContain("--heartbeat-interval 50 --election-timeout 500");
    expect(args).toMatch(/--initial-cluster-token broken-[0-9a-f-]{36}/);
    expect(harnessDirsNamed("broken")).toEqual([]);
  });

  it("retries the whole start with fresh ports when a port was taken, then gives up", async () => {
    const calls = await installFakeEtcd(
      'echo "etcdmain: listen tcp 127.0.0.1:1: bind: address already in use" >&2\nexit 1',
    );

    await expect(startEtcdCluster({ name: "crowded" })).rejects.toThrow(EtcdPortInUseError);

    const attempts = await invocations(calls);
    expect(attempts).toHaveLength(3);
    const clientUrls = attempts.map((args) => /--listen-client-urls (\S+)/.exec(args)?.[1]);
    expect(new Set(clientUrls).size).toBe(3);
    expect(harnessDirsNamed("crowded")).toEqual([]);
  });
});
