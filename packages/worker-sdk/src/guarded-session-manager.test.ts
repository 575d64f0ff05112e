import { execFile } from "node:child_process";
import { once } from "node:events";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { GuardedSessionManager, guardSession } from "./guarded-session-manager.js";

const pkg = resolve(import.meta.dirname, "..");
const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

async function h2Server(): Promise<string> {
  const server = http2.createServer();
  server.on("stream", (s) => s.respond({ ":status": 200 }));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  closers.push(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function connected(url: string): Promise<http2.ClientHttp2Session> {
  const s = http2.connect(url);
  s.on("error", () => undefined);
  await once(s, "connect");
  return s;
}

type Ping = [err: Error | null, duration: number];

describe("guardSession (connectrpc/connect-es#1795)", () => {
  it("the hazard: Node's ping() throws synchronously on a destroyed session", async () => {
    const s = await connected(await h2Server());
    s.destroy();
    expect(() => s.ping(() => undefined)).toThrow(
      expect.objectContaining({ code: "ERR_HTTP2_INVALID_SESSION" }),
    );
  });

  it("a guarded session reports a cancelled PING to the callback instead of throwing", async () => {
    const s = await connected(await h2Server());
    guardSession(s);
    s.destroy();
    const answer = new Promise<Ping>((res) => {
      expect(s.ping((err, duration) => res([err, duration]))).toBe(false);
    });
    const [err] = await answer;
    expect(err).toMatchObject({ code: "ERR_HTTP2_PING_CANCEL" });
  });

  it("a guarded live session still PINGs", async () => {
    const s = await connected(await h2Server());
    guardSession(s);
    guardSession(s); // idempotent
    const [err] = await new Promise<Ping>((res) => s.ping((e, d) => res([e, d])));
    expect(err).toBeNull();
    s.destroy();
  });

  it("GuardedSessionManager guards the session of every stream it hands out", async () => {
    const m = new GuardedSessionManager(await h2Server(), { pingIntervalMs: 60_000 });
    closers.push(() => m.abort());
    const stream = await m.request("POST", "/x", {}, {});
    const session = stream.session as http2.ClientHttp2Session;
    session.destroy();
    expect(() => session.ping(() => undefined)).not.toThrow();
  });
});

// A peer that does not speak HTTP/2, then closing the manager: published connect-node 2.2.0
// leaves the session without an error listener and Node crashes on the late `error` event.
// Run in child processes, so the unguarded run may crash.
const script = (manager: "raw" | "guarded") => `
import * as http from "node:http";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ShardService } from "@org/proto";
import { GuardedSessionManager } from ${JSON.stringify(pathToFileURL(resolve(pkg, "dist/guarded-session-manager.js")).href)};
const server = http.createServer((_req, res) => res.end("ok")).listen(0, "127.0.0.1");
await new Promise((r) => server.once("listening", r));
const baseUrl = "http://127.0.0.1:" + server.address().port;
const manager = ${manager === "raw" ? "new Http2SessionManager(baseUrl)" : "new GuardedSessionManager(baseUrl)"};
const client = createClient(ShardService, createGrpcTransport({ baseUrl, sessionManager: manager }));
async function* hello() {
  yield { seq: 1n, kind: { case: "hello", value: { group: "g", nodeId: "n" } } };
  await new Promise((r) => setTimeout(r, 1000));
}
try { for await (const _ of client.heartbeatStream(hello())) {} } catch (e) { console.log("refused:", e.message); }
manager.abort();
setTimeout(() => { console.log("survived"); server.close(); process.exit(0); }, 300);
`;

async function run(manager: "raw" | "guarded"): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      ["--input-type=module", "-e", script(manager)],
      { cwd: pkg, timeout: 20_000 },
    );
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === "number" ? x.code : -1, out: `${x.stdout ?? ""}${x.stderr ?? ""}` };
  }
}

describe("GuardedSessionManager against a peer that is not HTTP/2", () => {
  it("the hazard: the published manager crashes the process on abort()", async () => {
    const r = await run("raw");
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/Unhandled 'error' event/);
  }, 30_000);

  it("the guarded manager survives it", async () => {
    const r = await run("guarded");
    expect(r.out).toMatch(/refused: \[internal\] Protocol error/);
    expect(r.out).toMatch(/survived/);
    expect(r.code).toBe(0);
  }, 30_000);
});
