/**
 * Preloaded into a replica (`--import bench/dist/alloc-sampler.js`) by `bench tail` when
 * BENCH_ALLOC=1: V8's sampling heap profiler, counting objects already collected too (so it
 * measures what is allocated, not what stays). The first SIGUSR2 starts sampling, the second
 * writes `alloc-<pid>.heapprofile` into ALLOC_PROFILE_DIR and prints its path on stderr.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { join } from "node:path";

const session = new Session();
session.connect();
let sampling = false;
process.on("SIGUSR2", () => {
  void (async () => {
    if (!sampling) {
      sampling = true;
      await session.post("HeapProfiler.enable");
      await session.post("HeapProfiler.startSampling", {
        samplingInterval: 4096,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: true,
      });
      return;
    }
    sampling = false;
    const { profile } = await session.post("HeapProfiler.stopSampling");
    const out = join(process.env.ALLOC_PROFILE_DIR ?? ".", `alloc-${process.pid}.heapprofile`);
    writeFileSync(out, JSON.stringify(profile));
    process.stderr.write(`alloc profile: ${out}\n`);
  })();
});
