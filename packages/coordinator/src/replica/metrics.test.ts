import { describe, expect, it } from "vitest";
import { createMetrics } from "./metrics.js";

describe("createMetrics", () => {
  it("exports etcd errors by op and kind and etcd call durations by op, in its own registry", async () => {
    const a = createMetrics();
    const b = createMetrics(); // a second replica in the same process: no name clash
    a.etcdError("fenced_commit", "nospace");
    a.etcdError("fenced_commit", "nospace");
    a.etcdDuration("fenced_commit", 0.003);
    const text = await a.registry.metrics();
    expect(text).toMatch(/^shard_etcd_errors_total\{op="fenced_commit",kind="nospace"\} 2$/m);
    expect(text).toMatch(/^shard_etcd_request_duration_seconds_bucket\{le="0.005",op="fenced_commit"\} 1$/m);
    expect(text).toMatch(/^shard_etcd_request_duration_seconds_count\{op="fenced_commit"\} 1$/m);
    expect(await b.registry.metrics()).not.toMatch(/fenced_commit/);
  });
});
