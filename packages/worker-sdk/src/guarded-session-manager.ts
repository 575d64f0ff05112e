import type * as http2 from "node:http2";
import { type GrpcTransportOptions, Http2SessionManager } from "@connectrpc/connect-node";

type PingOptions = ConstructorParameters<typeof Http2SessionManager>[1];
/** What a gRPC transport needs of a session manager (connect-node does not export the name). */
type NodeHttp2ClientSessionManager = NonNullable<GrpcTransportOptions["sessionManager"]>;

/**
 * connect-node's `Http2SessionManager` (keep-alive PINGs, reconnects), guarded against two
 * ways the published @connectrpc/connect-node 2.2.0 can crash the whole process:
 *
 * 1. Its keep-alive timer can fire on a session that was just destroyed (a GOAWAY, a transport
 *    error, an idle close, `abort()`) before its close handlers stopped the timer; Node's
 *    `ClientHttp2Session.ping()` then throws `ERR_HTTP2_INVALID_SESSION` synchronously, out of
 *    a timer callback: an uncaught exception (connectrpc/connect-es#1795, fix proposed in
 *    connect-es#1797, not released). Each session we get a stream on has its `ping` wrapped:
 *    on a destroyed or closed session it reports a cancelled PING to the callback instead of
 *    throwing, which connect-node treats as "no answer" (and the session is gone anyway).
 * 2. When a session errors (for example a peer that does not speak HTTP/2: an HTTP/1.1 server)
 *    and is destroyed again later, Node emits `error` a second time, after connect-node
 *    detached its listeners: an unhandled `error` event. Each session keeps one listener that
 *    ignores errors; they already reach the streams and the manager.
 *
 * The sessions are reached through the streams `request()` returns: connect-node only arms its
 * PING timer once a stream was registered, so no PING can come before the guard. This lives in
 * the SDK (not only as a workspace patch) because a job installs connect-node from the registry.
 */
export class GuardedSessionManager implements NodeHttp2ClientSessionManager {
  readonly authority: string;
  readonly #inner: Http2SessionManager;

  constructor(url: string, pingOptions?: PingOptions, sessionOptions?: http2.SecureClientSessionOptions) {
    this.#inner = new Http2SessionManager(url, pingOptions, sessionOptions);
    this.authority = this.#inner.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.#inner.request(method, path, headers, options);
    const session = stream.session;
    if (session !== undefined) guardSession(session as http2.ClientHttp2Session);
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.#inner.notifyResponseByteRead(stream);
  }

  /** Closes the connection and every stream on it. */
  abort(reason?: Error): void {
    this.#inner.abort(reason);
  }
}

const guarded = new WeakSet<http2.ClientHttp2Session>();

type PingCallback = (err: Error | null, duration: number, payload: Buffer) => void;

/** Makes `session.ping` safe on a destroyed session, and swallows late `error` events. Idempotent. */
export function guardSession(session: http2.ClientHttp2Session): void {
  if (guarded.has(session)) return;
  guarded.add(session);
  const ping = session.ping.bind(session) as (...args: unknown[]) => boolean;
  const safePing = (...args: unknown[]): boolean => {
    if (session.destroyed || session.closed) {
      const callback = args.at(-1);
      if (typeof callback === "function") {
        const err = Object.assign(new Error("PING on a closed HTTP/2 session"), {
          code: "ERR_HTTP2_PING_CANCEL",
        });
        process.nextTick(() => (callback as PingCallback)(err, 0, Buffer.alloc(8)));
      }
      return false;
    }
    return ping(...args);
  };
  session.ping = safePing as typeof session.ping;
  session.on("error", () => undefined);
}
