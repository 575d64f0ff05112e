import { Code, ConnectError } from "@connectrpc/connect";
import { WorkerError, type WorkerErrorCode } from "./errors.js";

/**
 * Why one HeartbeatStream attempt ended, as the connect loop needs it: whether to follow a
 * redirect, retry, avoid a replica that stopped answering, or give up.
 */
export interface StreamFailure {
  /** A gRPC status name (`UNAVAILABLE`, `ALREADY_EXISTS`...), or a cause of our own (`NO_ACK`, `NO_WELCOME`, `UNRESPONSIVE`, `STALE_LEADER`). */
  readonly code: string;
  readonly message: string;
  /** The leader a follower named (`x-shard-leader`); undefined when none was named. */
  readonly leader: string | undefined;
  /** Set when retrying cannot fix it. */
  readonly fatal: WorkerErrorCode | undefined;
  /** The replica did not answer (a hang, not a refusal): do not wait on it again while it may still be named leader. */
  readonly unresponsive: boolean;
}

/** Our own reasons to end a stream (the abort reason of its signal). */
export class StreamAbort extends Error {
  override name = "StreamAbort";
  readonly code: "NO_ACK" | "NO_WELCOME" | "UNRESPONSIVE" | "STALE_LEADER";

  constructor(code: StreamAbort["code"], message: string) {
    super(message);
    this.code = code;
  }

  toFailure(): StreamFailure {
    return {
      code: this.code,
      message: this.message,
      leader: undefined,
      fatal: undefined,
      // A stale leader answers, but must not be waited on either.
      unresponsive: true,
    };
  }
}

/** Node's error code for a peer that does not speak HTTP/2 (an HTTP/1.1 server, any other protocol). */
const notHttp2 = new Set(["ERR_HTTP2_ERROR", "ERR_HTTP2_SESSION_ERROR", "ERR_HTTP2_STREAM_ERROR"]);

/**
 * The WorkerError for a refusal of our credentials (`unauthenticated`, `permission_denied`)
 * or a failed TLS handshake (`tls_failed`); undefined for anything else. Unary calls use it
 * so that these never become a retry or a vague `unavailable`.
 */
export function authFailure(ce: ConnectError): WorkerError | undefined {
  if (ce.code === Code.Unauthenticated)
    return new WorkerError("unauthenticated", ce.rawMessage, { cause: ce });
  if (ce.code === Code.PermissionDenied)
    return new WorkerError("permission_denied", ce.rawMessage, { cause: ce });
  const tls = tlsFailure(ce.cause ?? ce);
  return tls === undefined ? undefined : new WorkerError("tls_failed", tls, { cause: ce });
}

/**
 * Whether `e` (or a cause of it) is a failed TLS handshake: OpenSSL's alerts and verify
 * results as Node reports them (`ERR_SSL_*`, `ERR_TLS_*`, `CERT_HAS_EXPIRED`,
 * `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...). Retrying does not fix these: the certificates or
 * the configuration must change.
 */
export function tlsFailure(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c !== undefined && c !== null && depth < 5; depth += 1) {
    const code = nodeCode(c);
    if (code !== undefined && tlsCodes.test(code)) return `${code}: ${(c as Error).message}`;
    c = (c as { cause?: unknown }).cause;
  }
  return undefined;
}

const tlsCodes =
  /^(ERR_SSL_|ERR_TLS_|CERT_|UNABLE_TO_(GET|VERIFY|DECRYPT)|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|HOSTNAME_MISMATCH|INVALID_CA|EPROTO$)/;

/**
 * Whether the coordinator dropped the call mid-way rather than answered it: an HTTP/2
 * RST_STREAM or GOAWAY with CANCEL (what a server force-closing its connections sends;
 * connect-node reports CANCELED, or INTERNAL "Session closed with error code 8"), or a reset
 * connection (a process killed). Another replica heals it. The caller must have ruled out
 * its own abort, which also reads CANCELED.
 */
export function peerDropped(ce: ConnectError): boolean {
  if (ce.code === Code.Canceled) return true;
  for (let c: unknown = ce.cause, depth = 0; c !== undefined && c !== null && depth < 5; depth += 1) {
    const code = nodeCode(c);
    if (code === "ECONNRESET" || code === "EPIPE" || code === "ERR_HTTP2_GOAWAY_SESSION") return true;
    if (code === "ERR_HTTP2_SESSION_ERROR" && /error code 8$/.test((c as Error).message)) return true;
    c = (c as { cause?: unknown }).cause;
  }
  return false;
}

function nodeCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Classifies what the transport threw. Refusals that retrying cannot fix are `fatal`:
 * - `ALREADY_EXISTS`: another live stream holds this node id;
 * - `INVALID_ARGUMENT`: the coordinator rejected our group or node id;
 * - `UNAUTHENTICATED` / `PERMISSION_DENIED`: our credentials do not allow it;
 * - a peer that is not a coordinator: it does not speak HTTP/2 (connect-node reports
 *   `INTERNAL` "Protocol error" with Node's `ERR_HTTP2_ERROR` as the cause; e.g. the replica's
 *   HTTP port, any HTTP/1.1 server) or has no ShardService (`UNIMPLEMENTED`, also what an
 *   HTTP/2 server without gRPC answers: HTTP 404).
 * Everything else (refused connections, followers, leadership changes, resets) is transient.
 */
export function classifyStreamError(e: unknown): StreamFailure {
  if (e instanceof StreamAbort) return e.toFailure();
  const ce = ConnectError.from(e);
  if (ce.cause instanceof StreamAbort) return ce.cause.toFailure();
  const leaderHeader = ce.metadata.get("x-shard-leader");
  const leader = leaderHeader === null || leaderHeader === "" ? undefined : leaderHeader;
  const base = {
    code: Code[ce.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase(),
    message: ce.rawMessage,
    leader,
  };
  let fatal: WorkerErrorCode | undefined;
  switch (ce.code) {
    case Code.AlreadyExists:
      fatal = "already_exists";
      break;
    case Code.InvalidArgument:
      fatal = "invalid_argument";
      break;
    case Code.Unauthenticated:
      fatal = "unauthenticated";
      break;
    case Code.PermissionDenied:
      fatal = "permission_denied";
      break;
    case Code.Unimplemented:
      fatal = "not_coordinator";
      break;
    case Code.Internal: {
      const cause = nodeCode(ce.cause);
      if (cause !== undefined && notHttp2.has(cause) && !peerDropped(ce)) fatal = "not_coordinator";
      break;
    }
    default:
      break;
  }
  const tls = fatal === undefined ? tlsFailure(ce.cause ?? e) : undefined;
  if (tls !== undefined)
    return { ...base, code: "TLS_FAILED", message: tls, fatal: "tls_failed", unresponsive: false };
  return { ...base, fatal, unresponsive: false };
}
