import type * as http2 from "node:http2";
import type { Interceptor } from "@connectrpc/connect";
import { WorkerError } from "./errors.js";

/**
 * TLS towards the coordinator replicas. With it, every connection is `https` (HTTP/2 over TLS)
 * and the replica's certificate is verified against `ca`; with `cert` and `key` too, the
 * worker presents a client certificate (mutual TLS, `--tls-client-ca` on the replicas).
 */
export interface TlsClientOptions {
  /** PEM CA bundle that signed the replicas' certificates. @default Node's public roots */
  readonly ca?: string | Buffer;
  /** PEM client certificate chain (mutual TLS). Requires `key`. */
  readonly cert?: string | Buffer;
  /** PEM private key of `cert`. */
  readonly key?: string | Buffer;
  /** Name the replica certificates carry, when it is not the host of each address. @default the address's host */
  readonly serverName?: string;
}

/** How the SDK authenticates to the coordinator: TLS (and a client certificate), and/or a bearer token. */
export interface TransportSecurityOptions {
  /** TLS towards the replicas. @default plaintext */
  readonly tls?: TlsClientOptions;
  /**
   * A bearer token of the group (`coordinator auth token create`), sent as
   * `authorization: Bearer <token>` on every call. Never logged by the SDK. @default none
   */
  readonly token?: string;
}

/** What the transports use: the URL scheme, Node's HTTP/2 session options and the interceptors. */
export interface ResolvedTransportSecurity {
  readonly scheme: "http" | "https";
  readonly sessionOptions: http2.SecureClientSessionOptions;
  readonly interceptors: Interceptor[];
}

/**
 * Every connection to a replica: TCP_NODELAY, or each WINDOW_UPDATE the worker sends while
 * reading data waits behind Nagle's algorithm for the server's delayed ACK (40 ms on Linux)
 * whenever a stream window fills; and a 4 MiB stream window instead of 64 KiB, so a window
 * lasts several pages of FetchShardDataPages. Heartbeats gain the lower latency too.
 */
// `noDelay` reaches net.connect (http2.connect passes its options on); @types/node does not list it.
const connectionTuning: http2.SecureClientSessionOptions & { readonly noDelay?: boolean } = {
  noDelay: true,
  settings: { initialWindowSize: 4 << 20 },
};

/** Checks the options once (throws `WorkerError("invalid_options")`, never quoting a secret). */
export function resolveTransportSecurity(o: TransportSecurityOptions): ResolvedTransportSecurity {
  const tls = o.tls;
  if (tls !== undefined && (tls.cert === undefined) !== (tls.key === undefined))
    throw new WorkerError("invalid_options", "tls.cert and tls.key go together");
  const token = o.token;
  // A header value: no whitespace, no control characters (and so no header injection).
  if (token !== undefined && !/^[\x21-\x7e]{1,4096}$/.test(token))
    throw new WorkerError(
      "invalid_options",
      "token must be 1-4096 printable ASCII characters without spaces",
    );
  const interceptors: Interceptor[] =
    token === undefined
      ? []
      : [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ];
  const sessionOptions: http2.SecureClientSessionOptions =
    tls === undefined
      ? connectionTuning
      : {
          ...connectionTuning,
          ...(tls.ca === undefined ? {} : { ca: tls.ca }),
          ...(tls.cert === undefined ? {} : { cert: tls.cert }),
          ...(tls.key === undefined ? {} : { key: tls.key }),
          ...(tls.serverName === undefined ? {} : { servername: tls.serverName }),
        };
  return { scheme: tls === undefined ? "http" : "https", sessionOptions, interceptors };
}

/** Plaintext, no token (the default). */
export const plaintextTransport: ResolvedTransportSecurity = {
  scheme: "http",
  sessionOptions: connectionTuning,
  interceptors: [],
};
