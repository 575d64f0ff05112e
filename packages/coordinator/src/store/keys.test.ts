import { describe, expect, it } from "vitest";
import { checkName } from "../server/names.js";
import { keyLayout } from "./keys.js";

describe("keyLayout", () => {
  const k = keyLayout("/shardmgr/");
  it("lays every key under the namespace", () => {
    expect(k.electionKey("255")).toBe("/shardmgr/election/leader/ff");
    expect(k.member("billing", "b-7")).toBe("/shardmgr/groups/billing/members/b-7");
    expect(k.assignment("billing")).toBe("/shardmgr/groups/billing/assignment");
    expect(k.data("billing", "42")).toBe("/shardmgr/groups/billing/data/42");
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
