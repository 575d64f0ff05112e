import type { Reporter } from "./report.js";
export async function benchDetection(_rep: Reporter, _smoke: boolean): Promise<void> {}
