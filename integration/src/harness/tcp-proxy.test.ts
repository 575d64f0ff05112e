import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Etcd3 } from "etcd3";
import { afterEach, describe, expect, it } from "vitest";
import { type EtcdCluster, startEtcdCluster, startTcpProxy, type TcpProxy } from "./index.js";

/** How long "nothing arrives" is watched for; long enough to catch a relay that forwards anyway. */
const SILENCE_MS = 300;

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface EchoServer {
  readonly port: number;
  /** Connections the echo server has accepted so far. */
  readonly accepted: () => number;
}

async function startEchoServer(): Promise<EchoServer> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("echo server has no port");
  return { port: address.port, accepted: () => accepted };
}

async function proxyTo(port: number): Promise<TcpProxy> {
  const proxy = await startTcpProxy({ target: { host: "127.0.0.1", port } });
  cleanups.push(() => proxy.close());
  return proxy;
}

/** A client socket that records everything it receives and whether it was closed. */
interface Probe {
  readonly socket: Socket;
  readonly received: () => string;
  readonly closed: () => boolean;
}

async function connectProbe(port: number): Promise<Probe> {
  const socket = connect(port, "127.0.0.1");
  cleanups.push(() => {
    socket.destroy();
  });
  let received = "";
  let closed = false;
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    received += chunk;
  });
  socket.on("error", () => undefined);
  socket.on("close", () => {
    closed = true;
  });
  await once(socket, "connect");
  return { socket, received: () => received, closed: () => closed };
}

async function expectEcho(probe: Probe, text: string): Promise<void> {
  const before = probe.received();
  probe.socket.write(text);
  await expect.poll(probe.received, { timeout: 2_000 }).toBe(before + text);
}

describe("startTcpProxy", () => {
  it("relays bytes both ways and reports its addresses", async () => {
    const echo = await startEchoServer();
    const proxy = await proxyTo(echo.port);

    expect(proxy.port).toBeGreaterThan(0);
    expect(proxy.port).not.toBe(echo.port);
    expect(proxy.address).toBe(`127.0.0.1:${proxy.port}`);
    expect(proxy.url).toBe(`http://127.0.0.1:${proxy.port}`);
    expect(proxy.mode).toBe("open");

    const probe = await connectProbe(proxy.port);
    await expectEcho(probe, "hello");
    await expectEcho(probe, " world");
    expect(proxy.connectionCount).toBe(1);
    expect(echo.accepted()).toBe(1);
  });

  it("relays a large payload intact under back-pressure", async () => {
    const echo = await startEchoServer();
    const proxy = await proxyTo(echo.port);
    const probe = await connectProbe(proxy.port);
    const payload = "0123456789abcdef".repeat(512 * 1024); // 8 MiB, far beyond socket buffers

    probe.socket.write(payload);
    await expect.poll(() => probe.received().length, { timeout: 10_000 }).toBe(payload.length);
    expect(probe.received() === payload).toBe(true);
  });

  it("sever() resets open connections and refuses new ones until restore()", async () => {
    const echo = await startEchoServer();
    const proxy = await proxyTo(echo.port);
    const probe = await connectProbe(proxy.port);
    await expectEcho(probe, "ping");

    proxy.sever();
    expect(proxy.mode).toBe("severed");
    await expect.poll(probe.closed, { timeout: 2_000 }).toBe(true);
    expect(proxy.connectionCount).toBe(0);

    // New connections complete the handshake (the kernel accepts them) and are reset at once.
    const refused = connect(proxy.port, "127.0.0.1");
    cleanups.push(() => {
      refused.destroy();
    });
    refused.write("anyone?");
    let received = "";
    refused.on("data", (chunk: Buffer) => {
      received += chunk.toString();
    });
    const [error] = (await once(refused, "error")) as [NodeJS.ErrnoException];
    expect(error.code).toBe("ECONNRESET");
    expect(received).toBe("");
    expect(echo.accepted()).toBe(1);

    proxy.restore();
    expect(proxy.mode).toBe("open");
    await expectEcho(await connectProbe(proxy.port), "back");
  });

  it("blackhole() silences open and new connections without closing them; restore() delivers what was held", async () => {
    const echo = await startEchoServer();
    const proxy = await proxyTo(echo.port);
    const open = await connectProbe(proxy.port);
    await expectEcho(open, "a");

    proxy.blackhole();
    expect(proxy.mode).toBe("blackholed");
    open.socket.write("b");
    const late = await connectProbe(proxy.port);
    late.socket.write("c");
    await sleep(SILENCE_MS);
    expect(open.received()).toBe("a");
    expect(late.received()).toBe("");
    expect(open.closed() || late.closed()).toBe(false);
    // The held new connection has not reached the target at all.
    expect(echo.accepted()).toBe(1);
    expect(proxy.connectionCount).toBe(2);

    proxy.restore();
    await expect.poll(open.received, { timeout: 2_000 }).toBe("ab");
    await expect.poll(late.received, { timeout: 2_000 }).toBe("c");
    expect(echo.accepted()).toBe(2);
  });

  it("holdReplyTo() lets the marked request through but withholds the replies for a while, once", async () => {
    // An echo server that also records what reached it.
    let reached = "";
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on("error", () => undefined);
      socket.on("data", (chunk: Buffer) => {
        reached += chunk.toString();
        socket.write(chunk);
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    const proxy = await proxyTo(address.port);
    const probe = await connectProbe(proxy.port);
    await expectEcho(probe, "a");

    const fired = proxy.holdReplyTo("MARKER", 600);
    probe.socket.write("xMAR"); // split across two chunks
    await expect.poll(probe.received, { timeout: 2_000 }).toBe("axMAR");
    probe.socket.write("KERy");
    await fired;
    await sleep(SILENCE_MS);
    // The request reached the target; its answer did not come back (yet).
    expect(reached).toBe("axMARKERy");
    expect(probe.received()).toBe("axMAR");
    await expect.poll(probe.received, { timeout: 2_000 }).toBe("axMARKERy");
    // One-shot: the marker again passes straight through.
    await expectEcho(probe, "MARKER");
  });

  it("close() drops every connection, stops listening, and is idempotent", async () => {
    const echo = await startEchoServer();
    const proxy = await proxyTo(echo.port);
    const probes = [await connectProbe(proxy.port), await connectProbe(proxy.port)];
    for (const probe of probes) await expectEcho(probe, "x");

    await proxy.close();
    await proxy.close();

    expect(proxy.mode).toBe("closed");
    expect(proxy.connectionCount).toBe(0);
    for (const probe of probes) await expect.poll(probe.closed, { timeout: 2_000 }).toBe(true);
    const attempt = connect(proxy.port, "127.0.0.1");
    const [error] = (await once(attempt, "error")) as [NodeJS.ErrnoException];
    expect(error.code).toBe("ECONNREFUSED");
  });
});

describe("startTcpProxy in front of etcd", () => {
  let etcd: EtcdCluster;
  const clients: Etcd3[] = [];

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });

  function client(hosts: string): Etcd3 {
    const created = new Etcd3({ hosts });
    clients.push(created);
    return created;
  }

  async function setup(): Promise<{ proxy: TcpProxy; proxied: Etcd3; direct: Etcd3 }> {
    etcd = await startEtcdCluster({ name: "proxied" });
    cleanups.push(() => etcd.stop());
    const target = new URL(etcd.endpoints[0] ?? "");
    const proxy = await proxyTo(Number(target.port));
    return { proxy, proxied: client(proxy.url), direct: client(target.origin) };
  }

  const put = (to: Etcd3, key: string, value: string, deadlineMs = 5_000) =>
    to
      .put(key)
      .value(value)
      .options({ deadline: Date.now() + deadlineMs });
  const get = (from: Etcd3, key: string) =>
    from
      .get(key)
      .options({ deadline: Date.now() + 5_000 })
      .string();

  it("cuts off only the proxied client on sever(), and restore() lets it back in", async () => {
    const { proxy, proxied, direct } = await setup();
    await put(proxied, "via-proxy", "1");
    expect(await get(direct, "via-proxy")).toBe("1");

    proxy.sever();
    await expect(put(proxied, "k", "severed", 1_500)).rejects.toThrow();
    await put(direct, "k", "direct");
    expect(await get(direct, "k")).toBe("direct");

    proxy.restore();
    // The same client recovers by itself once its reconnect backoff and circuit breaker allow.
    await expect
      .poll(
        async () =>
          put(proxied, "k", "restored", 1_000).then(
            () => "ok",
            (error: unknown) => String(error),
          ),
        { timeout: 15_000, interval: 250 },
      )
      .toBe("ok");
    expect(await get(direct, "k")).toBe("restored");
  });

  it("stalls the proxied client on blackhole() without an error, and its pending call completes after restore()", async () => {
    const { proxy, proxied, direct } = await setup();
    await put(proxied, "k", "1");
    expect(proxy.connectionCount).toBe(1);

    proxy.blackhole();
    let outcome = "pending";
    const pending = put(proxied, "k", "sent-while-blackholed", 10_000).then(
      () => {
        outcome = "resolved";
      },
      (error: unknown) => {
        outcome = `rejected: ${String(error)}`;
      },
    );
    await sleep(1_000);
    // Neither an answer nor an error: the request is stuck in the partition.
    expect(outcome).toBe("pending");
    expect(await get(direct, "k")).toBe("1");
    await put(direct, "k", "direct");

    proxy.restore();
    await pending;
    // The held request went through on the very same connection once the partition healed.
    expect(outcome).toBe("resolved");
    expect(proxy.connectionCount).toBe(1);
    expect(await get(direct, "k")).toBe("sent-while-blackholed");
  });
});
