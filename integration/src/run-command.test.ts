import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

// The README's first command, as a newcomer runs it: `bash scripts/run.sh` (here for 24 s,
// with the leader SIGKILLed after 8 s as the README's --kill-leader example does).
// Both halves must show: the dataset workers process items, the demo tasks succeed; and
// nothing it started may outlive it. It uses the demo's fixed ports (etcd 2379, replicas
// 50051-50053, HTTP 9464-9466), like the README says.
const root = fileURLToPath(new URL("../../", import.meta.url));
const run = promisify(execFile);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("bash scripts/run.sh", () => {
  it("runs etcd, 3 replicas, dataset workers and demo tasks, then stops everything", async () => {
    const { stdout, stderr } = await run(
      "bash",
      ["scripts/run.sh", "--duration", "24", "--kill-leader", "8"],
      {
        cwd: root,
        encoding: "utf8",
        timeout: 150_000,
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, CI: "true" },
      },
    );
    const views = stdout.split("\n== ").slice(1);
    expect(views.length).toBeGreaterThanOrEqual(2);
    const last = views.at(-1) ?? "";
    expect(last).toMatch(/^leader: rm-\d/m);
    // The leader was SIGKILLed at +8 s: the view says so, another replica leads, and the shell
    // printed no job-control line ("Killed", "Terminated") into the view.
    const killed = /SIGKILLed leader (rm-\d)/.exec(last)?.[1];
    expect(killed).toBeDefined();
    expect(last).not.toMatch(new RegExp(`^leader: ${killed}\\b`, "m"));
    expect(`${stdout}\n${stderr}`).not.toMatch(/^.*line \d+: +\d+ (Killed|Terminated)/m);
    expect(last).toMatch(/group demo: version \d+ active/);
    expect(last).toMatch(/group jobs: version \d+ active/);
    const processed = [...last.matchAll(/worker-\d processed (\d+) items/g)].map((m) => Number(m[1]));
    expect(processed.length).toBe(4);
    for (const n of processed) expect(n).toBeGreaterThan(0);
    const feedOf = (view: string) => {
      const m =
        /task feed \(group jobs\): submitted (\d+), succeeded (\d+), failed (\d+), cancelled \d+/.exec(view);
      return { submitted: Number(m?.[1]), succeeded: Number(m?.[2]), failed: Number(m?.[3]) };
    };
    const f = feedOf(last);
    expect(f.submitted).toBeGreaterThan(20);
    expect(f.succeeded).toBeGreaterThan(10);
    expect(f.failed).toBe(0);
    // Tasks keep finishing after the leader's death, and the feed's watch keeps seeing them.
    const atKill = feedOf(views.find((v) => v.includes("SIGKILLed leader")) ?? "");
    expect(f.succeeded).toBeGreaterThan(atKill.succeeded);
    // The view's clock and its offset are one instant: consecutive views advance both alike.
    const stamps = views.map((v) => /^(\d\d):(\d\d):(\d\d) {2}\(\+(\d+)s\)/.exec(v));
    for (const s of stamps) expect(s).not.toBeNull();
    const clock = (s: RegExpExecArray | null) => Number(s?.[1]) * 3600 + Number(s?.[2]) * 60 + Number(s?.[3]);
    const first = stamps[0] ?? null;
    for (const s of stamps)
      expect((clock(s) - clock(first) + 86_400) % 86_400).toBe(Number(s?.[4]) - Number(first?.[4]));
    // Nothing it started is left: every pid it recorded is gone.
    const runDir = `${root}.run`;
    const pids = readdirSync(runDir)
      .filter((n) => n.endsWith(".pid"))
      .map((n) => Number(readFileSync(`${runDir}/${n}`, "utf8").trim()));
    expect(pids.length).toBe(13); // 3 etcd, 3 replicas, 4 workers, 2 task workers, the feed
    expect(pids.filter(alive)).toEqual([]);
  }, 180_000);
});
