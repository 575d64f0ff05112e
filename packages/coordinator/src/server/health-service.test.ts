import { describe, expect, it } from "vitest";
import { healthStatuses } from "./health-service.js";

describe("healthStatuses", () => {
  it("the leader serves everything while it reaches etcd", () => {
    expect(healthStatuses({ role: "leader", etcdConnected: true })).toEqual({
      "": "SERVING",
      "shard.v1.ShardService": "SERVING",
      "shard.v1.TaskService": "SERVING",
    });
  });
  it("a follower is alive but does not serve the leader's services", () => {
    expect(healthStatuses({ role: "follower", etcdConnected: true })).toEqual({
      "": "SERVING",
      "shard.v1.ShardService": "NOT_SERVING",
      "shard.v1.TaskService": "NOT_SERVING",
    });
  });
  it("nothing is served without etcd, while starting or once stopped", () => {
    for (const inputs of [
      { role: "leader", etcdConnected: false },
      { role: "follower", etcdConnected: false },
      { role: "starting", etcdConnected: true },
      { role: "stopped", etcdConnected: true },
    ] as const) {
      expect(Object.values(healthStatuses(inputs))).toEqual(["NOT_SERVING", "NOT_SERVING", "NOT_SERVING"]);
    }
  });
});
