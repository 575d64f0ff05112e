import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { withParentDeathSignal } from "./harness/parent-death-signal.js";
import { trackChild } from "./harness/process-registry.js";
import { assignmentOf, startCluster, until } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// The SDK as a user gets it: `pnpm pack` of @org/proto and @org/worker-sdk, installed with
// plain npm in a directory outside this workspace, so every other dependency comes from the
// registry as published (connect-node 2.2.0 without any workspace patch). A job run from there
// must ride out a leader SIGKILL: stay welcomed, keep its shard, no new version.
const env = useTestEnv(3);
const repo = resolve(import.meta.dirname, "../..");

/** pnpm's own entry when the tests run under it (pnpm exec / pnpm run), else `pnpm` on PATH. */
function pnpm(args: readonly string[], cwd: string): void {
  const entry = process.env.npm_execpath;
  const viaNode = entry !== undefined && /pnpm\.c?js$/.test(entry);
  execFileSync(viaNode ? process.execPath : "pnpm", viaNode ? [entry, ...args] : [...args], {
    cwd,
    stdio: "pipe",
    timeout: 60_000,
  });
}

const job = `
import { connectWorker } from "@org/worker-sdk";
const [coordinators, group, nodeId] = process.argv.slice(2);
const print = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ t: Date.now(), event, ...fields }) + "\\n");
// PINGs every second, so keep-alive timers are armed when the leader's connection dies.
const worker = await connectWorker({ coordinators: coordinators.split(","), group, nodeId, pingIntervalMs: 1000 });
print("joined", { version: worker.assignment.version });
void (async () => {
  for await (const e of worker.events()) {
    if (e.type === "shard_started" || e.type === "shard_stopped") print(e.type, { shard: e.shard.id, version: e.shard.version });
    else if (e.type === "assignment") print(e.type, { version: e.assignment.version, running: e.assignment.running });
    else if (e.type === "connected") print(e.type, { coordinator: e.coordinator, resumed: e.resumed });
    else if (e.type === "disconnected") print(e.type, { coordinator: e.coordinator, code: e.code });
    else print(e.type);
  }
})();
process.once("SIGTERM", () => void worker.close());
await worker.runShards(async (shard, signal) => {
  while (!signal.aborted) {
    if (worker.owns(shard.id)) print("working", { shard: shard.id });
    await new Promise((r) => setTimeout(r, 200));
  }
});
print("exited");
`;

// Pointed at something that is not a coordinator (a replica's HTTP port): a precise refusal, and
// no crash afterwards (the published connect-node leaves a late `error` event unhandled when the
// connection to a peer that does not speak HTTP/2 is closed; the SDK guards it).
const refused = `
import { connectWorker } from "@org/worker-sdk";
try {
  await connectWorker({ coordinators: [process.argv[2]], group: "pub", nodeId: "pub-x" });
  console.log("welcomed?");
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
}
await new Promise((r) => setTimeout(r, 500));
console.log("survived");
`;

interface Line {
  readonly t: number;
  readonly event: string;
  readonly [k: string]: unknown;
}

describe("the SDK as published", () => {
  it("installed from its packed tarballs with npm outside the workspace, a job rides out a leader SIGKILL", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sdk-published-"));
    env.cleanup(() => rmSync(dir, { recursive: true, force: true }));
    const t0 = performance.now();
    pnpm(["pack", "--pack-destination", dir], join(repo, "packages/proto"));
    pnpm(["pack", "--pack-destination", dir], join(repo, "packages/worker-sdk"));
    const app = join(dir, "app");
    execFileSync("mkdir", [app]);
    writeFileSync(
      join(app, "package.json"),
      JSON.stringify({
        name: "outside-job",
        private: true,
        type: "module",
        dependencies: {
          "@org/proto": `file:${join(dir, "org-proto-0.1.0.tgz")}`,
          "@org/worker-sdk": `file:${join(dir, "org-worker-sdk-0.1.0.tgz")}`,
        },
        // The SDK's dependency on @org/proto is this tarball, never a registry lookup.
        overrides: { "@org/proto": "$@org/proto" },
      }),
    );
    writeFileSync(join(app, "job.mjs"), job);
    writeFileSync(join(app, "refused.mjs"), refused);
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error"], {
      cwd: app,
      stdio: "pipe",
      timeout: 120_000,
    });
    const installedMs = Math.round(performance.now() - t0);
    // The registry's connect-node, not the workspace's: nothing of connect-es#1795's fix in it.
    const sessionManager = readFileSync(
      join(app, "node_modules/@connectrpc/connect-node/dist/esm/http2-session-manager.js"),
      "utf8",
    );
    expect(
      JSON.parse(readFileSync(join(app, "node_modules/@connectrpc/connect-node/package.json"), "utf8"))
        .version,
    ).toBe("2.2.0");
    expect(sessionManager).not.toMatch(/conn\.destroyed \|\| conn\.closed/);

    const c = await startCluster(env);
    const httpPort = new URL(c.replicas[0]?.httpUrl ?? "").port;
    const out = execFileSync(process.execPath, [join(app, "refused.mjs"), `127.0.0.1:${httpPort}`], {
      cwd: app,
      encoding: "utf8",
      timeout: 30_000,
    }).split("\n");
    expect(JSON.parse(out[0] ?? "{}")).toMatchObject({ code: "not_coordinator" });
    expect(out[1]).toBe("survived");
    const cmd = withParentDeathSignal(process.execPath, [
      join(app, "job.mjs"),
      c.addresses.join(","),
      "pub",
      "pub-0",
    ]);
    const child: ChildProcess = spawn(cmd.command, [...cmd.args], {
      cwd: app,
      stdio: ["ignore", "pipe", "pipe"],
    });
    trackChild(child);
    const lines: Line[] = [];
    const stderr: string[] = [];
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (l) => {
      try {
        lines.push(JSON.parse(l) as Line);
      } catch {
        stderr.push(l);
      }
    });
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (l) => stderr.push(l));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    env.cleanup(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    });

    await until(
      () => lines.some((l) => l.event === "working"),
      (ok) => ok,
      20_000,
    ).catch((e: unknown) => {
      throw new Error(`${String(e)}\njob output: ${JSON.stringify(lines.slice(-5))}\n${stderr.join("\n")}`);
    });
    const before = await assignmentOf(env, c, "pub");
    const leader = await c.waitForLeader();
    const killedAt = Date.now();
    await leader.kill();
    await c.waitForLeader({ not: leader });
    await until(
      () => lines.some((l) => l.event === "connected" && l.t >= killedAt),
      (ok) => ok,
      15_000,
    );
    const reattachMs = (lines.find((l) => l.event === "connected" && l.t >= killedAt)?.t ?? 0) - killedAt;
    // It keeps working its shard through the failover, then a while longer.
    await new Promise((r) => setTimeout(r, 1500));
    const after = lines.filter((l) => l.t >= killedAt);
    expect(after.filter((l) => ["fenced", "shard_stopped", "closed", "exited"].includes(l.event))).toEqual(
      [],
    );
    expect(after.some((l) => l.event === "working" && l.t > killedAt + reattachMs)).toBe(true);
    expect(child.exitCode).toBeNull();
    expect((await assignmentOf(env, c, "pub"))?.version).toBe(before?.version);
    expect(stderr).toEqual([]);
    // A clean exit on SIGTERM.
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    console.log(
      `published SDK: packed and installed in ${installedMs} ms; reattached ${reattachMs} ms after the leader's SIGKILL`,
    );
  }, 150_000);
});
