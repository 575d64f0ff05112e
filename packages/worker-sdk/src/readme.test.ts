import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

// The README's example must compile against the real, built package (connect-es does the
// same with node-readme.spec.ts): an API change that breaks the documented usage fails here.
const pkg = resolve(import.meta.dirname, "..");
const repo = resolve(pkg, "../..");

describe("README example", () => {
  it("type-checks against @org/worker-sdk", () => {
    const readme = readFileSync(join(pkg, "README.md"), "utf8");
    const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
    expect(blocks.length).toBeGreaterThan(0);
    const dir = mkdtempSync(join(pkg, ".readme-check-"));
    try {
      // As written: nothing declared around it (an undefined name fails here).
      writeFileSync(join(dir, "example.ts"), `${blocks[0]}\nexport {};\n`);
      // The tasks section's example too (worker side and client side).
      const tasks = blocks.find((b) => b.includes("runTasks("));
      expect(tasks).toBeDefined();
      writeFileSync(join(dir, "tasks-example.ts"), `${tasks}\nexport {};\n`);
      writeFileSync(
        join(dir, "tsconfig.json"),
        JSON.stringify({
          extends: "../../../tsconfig.base.json",
          compilerOptions: {
            noEmit: true,
            composite: false,
            declaration: false,
            declarationMap: false,
            lib: ["ES2024", "DOM"],
            rootDir: ".",
          },
          include: ["example.ts", "tasks-example.ts"],
        }),
      );
      execFileSync(join(repo, "node_modules", ".bin", "tsc"), ["-p", join(dir, "tsconfig.json")], {
        stdio: "pipe",
      });
    } catch (e) {
      const out = e as { stdout?: Buffer };
      throw new Error(`README example does not compile:\n${out.stdout?.toString() ?? String(e)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
