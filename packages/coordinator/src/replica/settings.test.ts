import { describe, expect, it } from "vitest";
import type { ClusterSettings } from "../store/records.js";
import { SettingsTracker } from "./settings.js";

const rec = (sessionTimeoutMs: number, previous?: number): ClusterSettings => ({
  sessionTimeoutMs,
  heartbeatIntervalMs: 500,
  strategy: "modulo",
  shards: 16,
  updatedAt: "",
  updatedBy: "test",
  ...(previous === undefined ? {} : { previous: { sessionTimeoutMs: previous, heartbeatIntervalMs: 500 } }),
});

describe("SettingsTracker", () => {
  it("announces a shorter session timeout at once but expels with the old one for one old timeout", () => {
    const t = new SettingsTracker(rec(5000), 0);
    t.update(rec(2000), 10_000);
    const during = t.effective(10_001);
    expect(during.sessionTimeoutMs).toBe(2000);
    expect(during.expiryMs).toBe(5000);
    expect(during.fenceMs).toBe(5000);
    const after = t.effective(15_000);
    expect(after.expiryMs).toBe(2000);
  });

  it("a longer session timeout counts for fences at once", () => {
    const t = new SettingsTracker(rec(2000), 0);
    t.update(rec(6000), 10_000);
    expect(t.effective(10_001).fenceMs).toBe(6000);
    expect(t.effective(10_001).expiryMs).toBe(6000);
  });

  it("a new leader honours a recorded previous value for one timeout from its takeover", () => {
    const t = new SettingsTracker(rec(2000, 8000), 1000);
    expect(t.effective(1001).expiryMs).toBe(8000);
    expect(t.effective(9001).expiryMs).toBe(2000);
  });
});
