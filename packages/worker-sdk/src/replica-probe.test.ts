import { once } from "node:events";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { probeReplica } from "./replica-probe.js";

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

async function listen(server: net.Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  closers.push(() => server.close());
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("probeReplica", () => {
  it("is true for a live HTTP/2 server", async () => {
    const target = await listen(http2.createServer());
    expect(await probeReplica(target, 1000)).toBe(true);
  });

  it("is false within the timeout for a peer whose kernel accepts but nothing answers (a paused process)", async () => {
    const sockets: net.Socket[] = [];
    const target = await listen(net.createServer((s) => sockets.push(s)));
    closers.push(() => {
      for (const s of sockets) s.destroy();
    });
    const t0 = performance.now();
    expect(await probeReplica(target, 200)).toBe(false);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(2000);
  });

  it("is false when nothing listens", async () => {
    const s = net.createServer();
    const target = await listen(s);
    s.close();
    await once(s, "close");
    expect(await probeReplica(target, 1000)).toBe(false);
  });

  it("is false for a peer that does not speak HTTP/2", async () => {
    const target = await listen(net.createServer((s) => s.end("HTTP/1.1 400 Bad Request\r\n\r\n")));
    expect(await probeReplica(target, 1000)).toBe(false);
  });

  it("is false at once when the signal aborts", async () => {
    const sockets: net.Socket[] = [];
    const target = await listen(net.createServer((s) => sockets.push(s)));
    closers.push(() => {
      for (const s of sockets) s.destroy();
    });
    const ac = new AbortController();
    const p = probeReplica(target, 10_000, ac.signal);
    setTimeout(() => ac.abort(), 20);
    const t0 = performance.now();
    expect(await p).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5000);
  });
});
