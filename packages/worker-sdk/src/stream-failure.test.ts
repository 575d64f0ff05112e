import { once } from "node:events";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { CoordinatorClients } from "./coordinator-clients.js";
import { classifyStreamError, StreamAbort } from "./stream-failure.js";

describe("classifyStreamError: statuses", () => {
  it("a follower's refusal: transient, with the leader it names", () => {
    const f = classifyStreamError(
      new ConnectError("not the leader", Code.Unavailable, { "x-shard-leader": "10.0.0.2:50051" }),
    );
    expect(f).toEqual({
      code: "UNAVAILABLE",
      message: "not the leader",
      leader: "10.0.0.2:50051",
      fatal: undefined,
      unresponsive: false,
    });
  });

  it("an empty x-shard-leader names no leader", () => {
    expect(
      classifyStreamError(new ConnectError("no leader yet", Code.Unavailable, { "x-shard-leader": "" }))
        .leader,
    ).toBeUndefined();
  });

  it.each([
    [Code.AlreadyExists, "ALREADY_EXISTS", "already_exists"],
    [Code.InvalidArgument, "INVALID_ARGUMENT", "invalid_argument"],
    [Code.PermissionDenied, "PERMISSION_DENIED", "permission_denied"],
    [Code.Unauthenticated, "UNAUTHENTICATED", "unauthenticated"],
    [Code.Unimplemented, "UNIMPLEMENTED", "not_coordinator"],
  ] as const)("%s is fatal: %s -> %s", (code, name, fatal) => {
    const f = classifyStreamError(new ConnectError("x", code));
    expect(f.code).toBe(name);
    expect(f.fatal).toBe(fatal);
  });

  it.each([
    Code.Unavailable,
    Code.ResourceExhausted,
    Code.Aborted,
    Code.Canceled,
    Code.Unknown,
    Code.Internal,
  ])("code %s is transient", (code) => {
    expect(classifyStreamError(new ConnectError("x", code)).fatal).toBeUndefined();
  });

  it("a session closed with CANCEL (what grpc-js's forceShutdown sends) is transient, unlike other session errors", () => {
    const sessionError = (n: number) =>
      new ConnectError(
        `Session closed with error code ${n}`,
        Code.Internal,
        undefined,
        undefined,
        Object.assign(new Error(`Session closed with error code ${n}`), { code: "ERR_HTTP2_SESSION_ERROR" }),
      );
    expect(classifyStreamError(sessionError(8)).fatal).toBeUndefined();
    expect(classifyStreamError(sessionError(1)).fatal).toBe("not_coordinator");
  });

  it("our own aborts say the replica did not answer", () => {
    const f = classifyStreamError(
      new ConnectError("x", Code.Canceled, undefined, undefined, new StreamAbort("NO_ACK", "silent")),
    );
    expect(f).toMatchObject({ code: "NO_ACK", message: "silent", unresponsive: true, fatal: undefined });
    expect(classifyStreamError(new StreamAbort("NO_WELCOME", "w")).code).toBe("NO_WELCOME");
  });
});

// The same, against real peers that are not coordinators, through the SDK's own transport.
describe("classifyStreamError: real endpoints", () => {
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

  async function attempt(target: string): Promise<ReturnType<typeof classifyStreamError>> {
    const clients = new CoordinatorClients(10_000);
    closers.push(() => clients.close());
    async function* hello() {
      yield { seq: 1n, kind: { case: "hello" as const, value: { group: "g", nodeId: "n" } } };
      await new Promise((r) => setTimeout(r, 2000));
    }
    try {
      for await (const _ of clients
        .client(target)
        .heartbeatStream(hello(), { signal: AbortSignal.timeout(5000) })) {
        // not expected
      }
      throw new Error("the stream ended cleanly");
    } catch (e) {
      return classifyStreamError(e);
    }
  }

  it("an HTTP/1.1 server (e.g. the replica's HTTP port) is not a coordinator", async () => {
    const target = await listen(http.createServer((_req, res) => res.end("ok")));
    const f = await attempt(target);
    expect(f.fatal).toBe("not_coordinator");
    expect(f.code).toBe("INTERNAL");
  });

  it("a server that speaks another protocol is not a coordinator", async () => {
    const target = await listen(net.createServer((s) => s.end("SSH-2.0-OpenSSH_9.6\r\n")));
    expect((await attempt(target)).fatal).toBe("not_coordinator");
  });

  it("an HTTP/2 server without gRPC (HTTP 404) is not a coordinator", async () => {
    const server = http2.createServer((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    const target = await listen(server);
    const f = await attempt(target);
    expect(f).toMatchObject({ code: "UNIMPLEMENTED", fatal: "not_coordinator" });
  });

  it("nothing listening is transient", async () => {
    const probe = net.createServer();
    const target = await listen(probe);
    probe.close();
    await once(probe, "close");
    const f = await attempt(target);
    expect(f).toMatchObject({ code: "UNAVAILABLE", fatal: undefined });
    expect(f.message).toMatch(/ECONNREFUSED/);
  });

  // A coordinator dropping the call mid-way (killed, or force-closed as grpc-js's
  // forceShutdown does) is not a refusal: the worker must try another replica.
  async function midway(drop: (stream: http2.ServerHttp2Stream, session: http2.ServerHttp2Session) => void) {
    const server = http2.createServer();
    server.on("stream", (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      setTimeout(() => drop(stream, stream.session as http2.ServerHttp2Session), 50);
    });
    return attempt(await listen(server));
  }

  it("a GOAWAY with CANCEL mid-stream is transient", async () => {
    const f = await midway((_s, session) => session.destroy(undefined, http2.constants.NGHTTP2_CANCEL));
    expect(f.fatal).toBeUndefined();
  });

  it("an RST_STREAM with CANCEL mid-stream is transient", async () => {
    const f = await midway((stream) => stream.close(http2.constants.NGHTTP2_CANCEL));
    expect(f.fatal).toBeUndefined();
  });

  it("a connection reset mid-stream is transient", async () => {
    const f = await midway((_s, session) => session.socket.destroy());
    expect(f.fatal).toBeUndefined();
  });
});
