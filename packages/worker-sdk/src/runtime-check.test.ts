import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { supportedNode } from "./runtime-check.js";

const pkg = resolve(import.meta.dirname, "..");

describe("supportedNode (engines: ^22.12.0 || >=24.0.0)", () => {
  it.each([
    ["20.20.2", false],
    ["22.11.0", false],
    ["22.12.0", true],
    ["22.21.1", true],
    ["23.11.0", false],
    ["24.0.0", true],
    ["25.1.0", true],
  ])("%s -> %s", (v, ok) => {
    expect(supportedNode(v)).toBe(ok);
  });
});

// The machine's own Node (a distribution's /usr/bin/node) is often older than the SDK needs.
const systemNode = "/usr/bin/node";
const systemVersion = existsSync(systemNode)
  ? execFileSync(systemNode, ["-p", "process.versions.node"], { encoding: "utf8" }).trim()
  : undefined;

describe.skipIf(systemVersion === undefined || supportedNode(systemVersion))(
  `importing the SDK on an unsupported Node (${systemNode} ${systemVersion ?? "absent"})`,
  () => {
    it("fails at once with one clear line on stderr and exit code 1", () => {
      const r = spawnSync(
        systemNode,
        ["--input-type=module", "-e", 'await import("@org/worker-sdk"); console.log("loaded");'],
        {
          cwd: pkg,
          encoding: "utf8",
          timeout: 20_000,
        },
      );
      expect(r.status).toBe(1);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `@org/worker-sdk: unsupported runtime: needs Node.js ^22.12.0 || >=24.0.0, this is Node.js v${systemVersion} (${systemNode})`,
      );
    });
  },
);
