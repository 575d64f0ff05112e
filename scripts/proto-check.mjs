#!/usr/bin/env node
// Regenerates the protobuf TypeScript into a temporary directory and compares it,
// file by file, with the committed packages/proto/src/gen. Any difference (a hand
// edit of generated code, or a .proto changed without `pnpm proto:generate`) fails.
// Usage: node scripts/proto-check.mjs [--root DIR]   (DIR defaults to the repo root)
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const rootFlag = process.argv.indexOf("--root");
const root = rootFlag > 0 ? resolve(process.argv[rootFlag + 1] ?? ".") : repo;
const bin = join(repo, "node_modules", ".bin");
const genRel = join("packages", "proto", "src", "gen");

function listFiles(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(listFiles(p));
    else out.push(p);
  }
  return out;
}

const tmp = mkdtempSync(join(tmpdir(), "proto-check-"));
try {
  execFileSync(join(bin, "buf"), ["generate", "-o", tmp], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` },
  });
  const fresh = join(tmp, genRel);
  const committed = join(root, genRel);
  const names = new Set([
    ...listFiles(fresh).map((f) => relative(fresh, f)),
    ...listFiles(committed).map((f) => relative(committed, f)),
  ]);
  const drift = [];
  for (const name of [...names].sort()) {
    let a = null;
    let b = null;
    try {
      a = readFileSync(join(fresh, name));
    } catch {}
    try {
      b = readFileSync(join(committed, name));
    } catch {}
    if (a === null) drift.push(`${name}: committed but not generated`);
    else if (b === null) drift.push(`${name}: generated but not committed`);
    else if (!a.equals(b)) drift.push(`${name}: differs from what buf generates`);
  }
  if (drift.length > 0) {
    console.error(`proto:check: generated code has drifted from the .proto files:`);
    for (const d of drift) console.error(`  ${join(genRel, d)}`);
    console.error(`Run 'pnpm proto:generate' and commit the result.`);
    process.exit(1);
  }
  console.log(`proto:check: ${names.size} generated file(s) match the .proto files`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
