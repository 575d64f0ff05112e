import { connect, constants } from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { shardServiceName, WorkerMessageSchema } from "@org/proto";
import { connectWorker } from "@org/worker-sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type EtcdCluster, startEtcdCluster } from "./harness/etcd-cluster.js";
import { RmCluster } from "./support/rm-cluster.js";

// A worker that stops reading its stream must be cut off once its outbound queue overflows,
// and nobody else may be slowed. The slow reader is a raw HTTP/2 client that advertises a
// zero flow-control window, so the leader can never deliver anything to it.
let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await startEtcdCluster({ size: 1 });
});
afterAll(async () => {
  await etcd?.stop();
});

function frame(msg: Parameters<typeof create<typeof WorkerMessageSchema>>[1]): Buffer {
  const body = toBinary(WorkerMessageSchema, create(WorkerMessageSchema, msg));
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(out, 5);
  return out;
}

describe("slow reader", () => {
  it("is disconnected when its outbound queue overflows; a normal worker is undisturbed", async () => {
    const rm = await RmCluster.start({
      etcd: etcd.endpoints,
      count: 1,
      args: ["--heartbeat-interval", "100", "--session-timeout", "5000"],
    });
    try {
      const leader = await rm.waitForLeader();
      const good = await connectWorker({ coordinators: [leader.address], group: "slow", nodeId: "good" });
      const session = connect(`http://${leader.address}`, { settings: { initialWindowSize: 0 } });
      session.on("error", () => undefined);
      const stream = session.request({
        ":method": "POST",
        ":path": `/${shardServiceName}/HeartbeatStream`,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => undefined);
      const closed = new Promise<number>((resolve) => stream.on("close", () => resolve(stream.rstCode)));
      stream.write(frame({ seq: 1n, kind: { case: "hello", value: { group: "slow", nodeId: "slow" } } }));
      // Heartbeats at the highest sustained rate the leader allows (50/s at a 100 ms interval):
      // every ack piles up in the leader's queue for this stream.
      let seq = 1n;
      const pump = setInterval(() => {
        for (let i = 0; i < 2; i++) {
          seq += 1n;
          if (!stream.closed)
            stream.write(
              frame({ seq, kind: { case: "heartbeat", value: { nodeId: "slow", ts: BigInt(Date.now()) } } }),
            );
        }
      }, 45);
      const t0 = performance.now();
      const outcome = await Promise.race([
        closed.then(() => "closed"),
        new Promise((r) => setTimeout(() => r("timeout"), 30_000)),
      ]);
      clearInterval(pump);
      if (outcome !== "closed") console.log(leader.logs.map((l) => JSON.stringify(l)).join("\n"));
      expect(outcome).toBe("closed");
      await leader.waitForLog(
        (l) => l.event === "stream_closed" && l.node === "slow" && l.code === "RESOURCE_EXHAUSTED",
        5000,
      );
      // The well-behaved worker kept its session and its shard meanwhile.
      expect(good.assignment.running.length).toBe(1);
      expect(performance.now() - t0).toBeLessThan(30_000);
      session.close();
      session.destroy(undefined, constants.NGHTTP2_CANCEL);
      await good.close();
    } finally {
      await rm.stop();
    }
  });
});
