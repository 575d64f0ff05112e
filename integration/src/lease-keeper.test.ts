import { createEtcdClient, createLogger, type LeaseAck, LeaseKeeper } from "@org/coordinator";
import { describe, expect, it } from "vitest";
import { startTcpProxy, type TcpProxy } from "./harness/index.js";
import { useTestEnv } from "./support/test-env.js";

// A keep-alive stream on a half-open connection (a partitioned etcd member: writes accepted,
// nothing answered, no FIN) must not hold the leases it carries hostage: grpc-js' keep-alive
// notices only after 15 s, longer than any TTL. Two proxies to one member stand for two
// members; each is silenced in turn, so the stream is on a silenced one at least once.
const env = useTestEnv(1);

describe("LeaseKeeper on a stalled connection", () => {
  it("moves its keep-alive stream to another endpoint within about a second", async () => {
    const target = new URL(env.etcd.endpoints[0] ?? "");
    const proxies: TcpProxy[] = [];
    for (let i = 0; i < 2; i++) {
      const p = await startTcpProxy({ target: { host: target.hostname, port: Number(target.port) } });
      env.cleanup(() => p.close());
      proxies.push(p);
    }
    const client = createEtcdClient(proxies.map((p) => p.url));
    env.cleanup(() => client.close());
    const acks: LeaseAck[] = [];
    const keeper = new LeaseKeeper(client, createLogger("lease-keeper-test", "silent"), (a) => acks.push(a), {
      stallMs: 500,
    });
    env.cleanup(() => keeper.close());
    const { leaseId } = await keeper.grant(30);
    const timer = setInterval(() => keeper.keepAlive(leaseId), 200);
    env.cleanup(() => clearInterval(timer));
    const ackAfter = async (t: number, withinMs: number) => {
      const deadline = Date.now() + withinMs;
      while (Date.now() < deadline) {
        const a = acks.at(-1);
        if (a !== undefined && performance.timeOrigin + a.sentAt > t) return true;
        await new Promise((r) => setTimeout(r, 50));
      }
      return false;
    };
    expect(await ackAfter(Date.now(), 2000)).toBe(true);
    const gaps: boolean[] = [];
    for (const [silenced, other] of [
      [proxies[0], proxies[1]],
      [proxies[1], proxies[0]],
    ] as const) {
      other?.restore();
      silenced?.blackhole();
      const t = Date.now();
      // Let any stream on the silenced endpoint stall (and be replaced), then require acks
      // of keep-alives sent after the cut to keep arriving: 1.5 s is a tenth of grpc-js' 15 s.
      gaps.push(await ackAfter(t, 1500));
      expect(await ackAfter(Date.now(), 1500)).toBe(true);
    }
    expect(gaps).toEqual([true, true]);
    expect(keeper.stalls).toBeGreaterThanOrEqual(1);
    for (const a of acks) expect(a.ttlSec).toBeGreaterThan(0);
  });
});
