import { describe, expect, it } from "vitest";
import { checkName } from "../server/names.js";
import { keyLayout } from "./keys.js";

describe("keyLayout", () => {
  const k = keyLayout("/shardmgr/");
  it("lays every key under the namespace", () => {
    expect(k.electionKey("255")).toBe("/shardmgr/election/leader/ff");
    expect(k.member("billing", "b-7")).toBe("/shardmgr/groups/billing/members/b-7");
    expect(k.assignment("billing")).toBe("/shardmgr/groups/billing/assignment");
  });
  it("keeps data records under a prefix of their own, outside the namespace", () => {
    expect(k.dataNamespace).toBe("/shardmgr-data");
    expect(k.dataLayout("billing")).toBe("/shardmgr-data/billing/layout");
    expect(k.dataBucketPrefix("billing", "07")).toBe("/shardmgr-data/billing/b/07/");
    expect(k.dataRecord("billing", "07", "00042")).toBe("/shardmgr-data/billing/b/07/00042");
    // `etcdctl get --prefix /shardmgr/` and the leader's load never see them.
    expect(k.dataRecord("billing", "07", "1").startsWith("/shardmgr/")).toBe(false);
    expect(keyLayout("/a/b", { dataNamespace: "/data-a" }).dataLayout("g")).toBe("/data-a/g/layout");
    expect(keyLayout("/").dataLayout("g")).toBe("data/g/layout");
  });
  it("refuses a data namespace inside the namespace or containing it", () => {
    expect(() => keyLayout("/shardmgr", { dataNamespace: "/shardmgr/data" })).toThrow(/outside/);
    expect(() => keyLayout("/shardmgr", { dataNamespace: "/shardmgr" })).toThrow(/outside/);
    expect(() => keyLayout("/shardmgr/x", { dataNamespace: "/shardmgr" })).toThrow(/outside/);
    expect(() => keyLayout("/", { dataNamespace: "/data" })).toThrow(/outside/);
    expect(keyLayout("/shardmgr", { dataNamespace: "/shardmgr2" }).dataNamespace).toBe("/shardmgr2");
  });
  it("parses group keys back", () => {
    expect(k.parseGroupKey("/shardmgr/groups/billing/members/b-7")).toEqual({
      group: "billing",
      rest: "members/b-7",
    });
    expect(k.parseGroupKey("/shardmgr/election/leader/ff")).toBeUndefined();
    expect(k.parseGroupKey("/shardmgr/groups/")).toBeUndefined();
  });
});

describe("checkName", () => {
  it("accepts 1-128 characters of [A-Za-z0-9._:-] and says why otherwise", () => {
    expect(checkName("node_id", "billing-7.a:b_c")).toBeUndefined();
    expect(checkName("node_id", "x".repeat(128))).toBeUndefined();
    expect(checkName("node_id", "")).toMatch(/empty/);
    expect(checkName("group", "x".repeat(129))).toMatch(/128/);
    expect(checkName("group", "a/b")).toMatch(/characters/);
  });
});
