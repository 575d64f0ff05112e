import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";

// `pnpm proto:check` must catch both kinds of drift: generated code edited by hand, and a
// .proto changed without regenerating. Each case runs the real check (real buf, real
// protoc-gen-es) on a copy of the module.
const repo = resolve(import.meta.dirname, "../../..");
const check = join(repo, "scripts", "proto-check.mjs");
const gen = join("packages", "proto", "src", "gen", "shard", "v1", "shard_pb.ts");
const proto = join("packages", "proto", "proto", "shard", "v1", "shard.proto");
let dir = "";

function copy(): string {
  dir = mkdtempSync(join(tmpdir(), "proto-check-test-"));
  for (const f of ["buf.yaml", "buf.gen.yaml"]) cpSync(join(repo, f), join(dir, f));
  // buf.gen.yaml names the local protoc-gen-es by its path under node_modules.
  symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
  cpSync(join(repo, "packages/proto/proto"), join(dir, "packages/proto/proto"), { recursive: true });
  cpSync(join(repo, "packages/proto/src/gen"), join(dir, "packages/proto/src/gen"), { recursive: true });
  return dir;
}

const run = (root: string) =>
  spawnSync(process.execPath, [check, "--root", root], { encoding: "utf8", timeout: 60_000 });

afterEach(() => {
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
  dir = "";
});

describe("pnpm proto:check", () => {
  it("passes on the committed tree", () => {
    const r = run(copy());
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  it("fails when generated code was edited by hand", () => {
    const root = copy();
    writeFileSync(join(root, gen), `${readFileSync(join(root, gen), "utf8")}\n// hand edit\n`);
    const r = run(root);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("shard_pb.ts: differs");
  });

  it("fails when the .proto changed without regenerating", () => {
    const root = copy();
    const text = readFileSync(join(root, proto), "utf8").replace(
      "message Leave {\n",
      "message Leave {\n  // new\n  string note = 99;\n",
    );
    writeFileSync(join(root, proto), text);
    const r = run(root);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("drifted");
  });

  it("buf lint passes with the STANDARD rules", () => {
    execFileSync(join(repo, "node_modules", ".bin", "buf"), ["lint"], { cwd: repo, stdio: "pipe" });
  });
});
