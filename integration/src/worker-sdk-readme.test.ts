import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { putShardData } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { withParentDeathSignal } from "./harness/parent-death-signal.js";
import { trackChild } from "./harness/process-registry.js";
import { startCluster, until } from "./support/cluster-helpers.js";
import { useTestEnv } from "./support/test-env.js";

// The SDK README's example, run as written (Node strips its types) against real replicas: it
// decodes payloads, keeps working its shard as records arrive, and exits cleanly on SIGTERM.
const env = useTestEnv(3);
const pkg = resolve(import.meta.dirname, "../../packages/worker-sdk");

describe("the SDK README example", () => {
  it("runs as written: processes its shard's records, keeps polling for new ones, exits on SIGTERM", async () => {
    const readme = readFileSync(join(pkg, "README.md"), "utf8");
    const example = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)][0]?.[1];
    expect(example).toBeDefined();
    // Inside the package, so `@org/worker-sdk` resolves to the built package itself.
    const dir = mkdtempSync(join(pkg, ".readme-run-"));
    env.cleanup(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "example.ts"), example ?? "");

    const c = await startCluster(env);
    // Records go in the way a producer puts them: PutShardData through the leader.
    const put = async (id: string) => {
      const summary = await putShardData("billing", [{ id, payload: `payload of ${id}` }], {
        coordinators: c.addresses,
      });
      expect(summary.written).toBe(1);
    };
    for (const id of ["a-1", "a-2", "a-3"]) await put(id);

    const cmd = withParentDeathSignal(process.execPath, [join(dir, "example.ts")]);
    const child = spawn(cmd.command, [...cmd.args], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, COORDINATORS: c.addresses.join(","), NODE_ID: "readme-1" },
    });
    trackChild(child);
    const out: string[] = [];
    const events: { type?: string }[] = [];
    const other: string[] = [];
    createInterface({ input: child.stdout }).on("line", (l) => out.push(l));
    createInterface({ input: child.stderr }).on("line", (l) => {
      try {
        events.push(JSON.parse(l) as { type?: string });
      } catch {
        other.push(l);
      }
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    env.cleanup(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    });
    const printed = (id: string) => out.some((l) => l.endsWith(`: ${id} = payload of ${id}`));
    await until(
      () => ["a-1", "a-2", "a-3"].every(printed),
      (ok) => ok,
      20_000,
    ).catch((e: unknown) => {
      throw new Error(`${String(e)}\nstdout: ${out.join("\n")}\nstderr: ${other.join("\n")}`);
    });
    expect(out[0]).toMatch(/^shard 0\/1 \(v\d+\): a-1 = payload of a-1$/);
    // Caught up, it keeps its shard and picks up what arrives later.
    for (const id of ["b-1", "b-2"]) await put(id);
    await until(
      () => printed("b-1") && printed("b-2"),
      (ok) => ok,
      10_000,
    );
    expect(out.filter((l) => l.includes(" = "))).toHaveLength(5); // nothing twice
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(events.some((e) => e.type === "shard_started")).toBe(true);
    expect(events.at(-1)?.type).toBe("closed");
    expect(other).toEqual([]);
  }, 90_000);
});
