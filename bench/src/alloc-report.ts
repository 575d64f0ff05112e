import { readFileSync } from "node:fs";

interface ProfileNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children?: readonly ProfileNode[];
}

/** Where a sampled allocation profile's bytes were allocated (self, by function), per unit of work. */
export function allocationSites(
  path: string,
  units: number,
  top = 15,
): { bytesPerUnit: number; sites: { site: string; bytesPerUnit: number }[] } {
  const profile = JSON.parse(readFileSync(path, "utf8")) as { head: ProfileNode };
  const bySite = new Map<string, number>();
  let total = 0;
  const stack: ProfileNode[] = [profile.head];
  for (let n = stack.pop(); n !== undefined; n = stack.pop()) {
    const f = n.callFrame;
    // The package and file (`sonic-boom/index.js`), or our own last two path segments.
    const inPackage = f.url.split("node_modules/").at(-1) ?? "";
    const file = f.url.includes("node_modules/") ? inPackage : f.url.split("/").slice(-2).join("/");
    const site = `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
    bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
    total += n.selfSize;
    for (const c of n.children ?? []) stack.push(c);
  }
  const sites = [...bySite]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([site, bytes]) => ({ site, bytesPerUnit: bytes / units }));
  return { bytesPerUnit: total / units, sites };
}
