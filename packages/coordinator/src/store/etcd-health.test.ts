import { Writable } from "node:stream";
import { GRPCUnavailableError } from "etcd3";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { CoordinatorError } from "../errors.js";
import type { EtcdErrorKind } from "./etcd-errors.js";
import { EtcdHealth } from "./etcd-health.js";

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  });
  const errors: [string, EtcdErrorKind][] = [];
  const durations: string[] = [];
  const metrics = {
    etcdError: (op: string, kind: EtcdErrorKind) => errors.push([op, kind]),
    etcdDuration: (op: string) => durations.push(op),
  };
  return { log: pino({ level: "info" }, stream), lines, errors, durations, metrics };
}

describe("EtcdHealth", () => {
  it("goes connecting -> unreachable -> connected, one log line per change and per failure", async () => {
    let now = 1_000_000;
    const c = capture();
    const h = new EtcdHealth(["http://e:2379"], c.log, c.metrics, () => now);
    expect(h.state).toBe("connecting");
    expect(h.notReadyReason()).toContain("not reached yet");
    const err = new GRPCUnavailableError("14 UNAVAILABLE: No connection established");
    await expect(h.call("leader_read", () => Promise.reject(err))).rejects.toBe(err);
    expect(h.failed("leader_read", err, 1000, { attempt: 1 })).toBe("unavailable");
    expect(h.state).toBe("unreachable");
    expect(h.snapshot().nextRetryAt).toBe(new Date(now + 1000).toISOString());
    expect(h.notReadyReason()).toContain("unavailable: 14 UNAVAILABLE");
    now += 2000;
    expect(h.snapshot().nextRetryAt).toBeNull();
    await h.call("leader_read", () => Promise.resolve(1));
    expect(h.state).toBe("connected");
    expect(h.notReadyReason()).toBeUndefined();
    expect(c.lines.map((l) => l.event)).toEqual(["etcd_unreachable", "etcd_error", "etcd_connected"]);
    expect(c.lines[1]).toMatchObject({ op: "leader_read", kind: "unavailable", retryInMs: 1000, attempt: 1 });
    // Counted once although both call() and failed() saw it; durations for both calls.
    expect(c.errors).toEqual([["leader_read", "unavailable"]]);
    expect(c.durations).toEqual(["leader_read", "leader_read"]);
  });

  it("counts a wrapper of an already counted error once, and NOSPACE leaves the state alone", async () => {
    const c = capture();
    const h = new EtcdHealth(["e"], c.log, c.metrics);
    h.ok();
    const inner = new GRPCUnavailableError("x");
    await h.call("fenced_commit", () => Promise.reject(inner)).catch(() => undefined);
    h.failed("rebalance", new CoordinatorError("etcd_unavailable", "w", { cause: inner }), 500);
    expect(c.errors).toEqual([["fenced_commit", "unavailable"]]);
    h.ok();
    h.failed("rebalance", new CoordinatorError("etcd_nospace", "full"), 2000);
    expect(h.state).toBe("connected");
    expect(c.lines.at(-1)).toMatchObject({ level: 50, event: "etcd_error", kind: "nospace" });
  });

  it("sleep() ends early when etcd answers again, and on abort", async () => {
    const c = capture();
    const h = new EtcdHealth(["e"], c.log, c.metrics);
    h.failed("probe", new GRPCUnavailableError("x"), 60_000);
    const started = performance.now();
    const woken = h.sleep(60_000, new AbortController().signal);
    h.ok();
    await woken;
    const stop = new AbortController();
    const aborted = h.sleep(60_000, stop.signal);
    stop.abort();
    await aborted;
    expect(performance.now() - started).toBeLessThan(5000);
  });
});
