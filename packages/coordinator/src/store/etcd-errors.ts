import { isBrokenCircuitError } from "cockatiel";
import {
  ClientClosedError,
  castGrpcError,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  EtcdRoleNotGrantedError,
  EtcdUserNotFoundError,
  EtcdWatchStreamEnded,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCInternalError,
  GRPCInvalidArgumentError,
  GRPCOutOfRangeError,
  GRPCResourceExhastedError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
} from "etcd3";
import { CoordinatorError, type CoordinatorErrorCode } from "../errors.js";
import type { BackoffOptions } from "./backoff.js";

/**
 * What an etcd failure means for whoever retries it, as a stable string:
 *
 * - `nospace`: etcd raised its NOSPACE alarm (backend over `--quota-backend-bytes`); every
 *   write fails until an operator compacts, defragments and disarms the alarm. Reads work.
 * - `compacted`: the revision asked for (a watch's start, a read at a revision) was
 *   compacted away; re-read the current state and watch from there.
 * - `unavailable`: no answer in time, no connection, no etcd leader, or the client's own
 *   circuit breaker is open; transient, retry with backoff.
 * - `too_large`: a request over etcd's `--max-request-bytes`, or an answer over the
 *   client's receive limit; retrying the same call cannot help.
 * - `auth`: etcd refused our credentials or permissions; an operator must act.
 * - `other`: anything else (a bug, a closed client, an unexpected status).
 */
export type EtcdErrorKind = "nospace" | "compacted" | "unavailable" | "too_large" | "auth" | "other";

/**
 * A watch that etcd cancelled from its side (rather than a broken stream). etcd3's
 * `Watcher` reports one as a plain `EtcdError("Watcher canceled: <reason>")`; wrap it in
 * this class where the watcher's `error` event is handled so the cause is classified by
 * class. etcd 3.4 cancels a live watch from the server only when its revision was
 * compacted (and sends no reason); an auth failure keeps its own class as the cause.
 */
export class EtcdWatchCancelledError extends Error {
  override name = "EtcdWatchCancelledError";
  constructor(cause: unknown) {
    super(`watch cancelled by etcd: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

// etcd's own error strings inside one gRPC status code (api/v3rpc/rpctypes/error.go). Go's
// client tells them apart the same way (rpctypes.Error maps the description); etcd3 keeps
// the description as the message of a class per status code, so the class comes first and
// these only split RESOURCE_EXHAUSTED, which etcd and grpc-js share for three meanings.
const etcdNoSpace = "etcdserver: mvcc: database space exceeded";
const etcdTooManyRequests = "etcdserver: too many requests";
const etcdRequestTooLarge = "etcdserver: request is too large";

const codeKinds: ReadonlyMap<CoordinatorErrorCode, EtcdErrorKind> = new Map([
  ["etcd_nospace", "nospace"],
  ["etcd_unavailable", "unavailable"],
  ["etcd_auth", "auth"],
] as const);

/**
 * Classifies anything an etcd3 call (or our wrappers of one) threw. Follows `cause` chains,
 * so a `CoordinatorError` wrapping an etcd error is classified by the etcd error.
 *
 * @example
 * ```ts
 * try { await store.commit(op); }
 * catch (e) { if (classifyEtcdError(e) === "nospace") alertOperator(); }
 * ```
 */
export function classifyEtcdError(e: unknown): EtcdErrorKind {
  let cur: unknown = e;
  for (let depth = 0; depth < 8 && cur !== undefined && cur !== null; depth++) {
    const kind = classifyOne(cur);
    if (kind !== undefined) return kind;
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return "other";
}

function classifyOne(e: unknown): EtcdErrorKind | undefined {
  if (!(e instanceof Error)) return undefined;
  // A raw grpc-js error (a plain Error with a status code), as etcd3 hands a broken watch
  // stream to its watchers: cast it to etcd3's class for its code first.
  if (e.constructor === Error && typeof (e as { code?: unknown }).code === "number")
    return classifyOne(castGrpcError(e));
  if (e instanceof GRPCResourceExhastedError) {
    if (e.message.includes(etcdNoSpace)) return "nospace";
    if (e.message.includes(etcdTooManyRequests)) return "unavailable";
    // grpc-js: "Received message larger than max (N vs M)", the client's receive limit.
    return "too_large";
  }
  if (e instanceof GRPCInvalidArgumentError && e.message.includes(etcdRequestTooLarge)) return "too_large";
  if (e instanceof GRPCOutOfRangeError) return "compacted"; // ErrCompacted (or ErrFutureRev, which we never ask for)
  if (e instanceof EtcdWatchCancelledError) {
    const inner = e.cause instanceof Error ? classifyOne(e.cause) : undefined;
    return inner === "auth" ? "auth" : "compacted";
  }
  if (
    e instanceof GRPCUnavailableError ||
    e instanceof GRPCDeadlineExceededError ||
    // A call cut short by a channel reset (etcd3 resets a host's channels on failures) or an
    // HTTP/2 stream reset: transient, like an unavailable endpoint.
    e instanceof GRPCCancelledError ||
    e instanceof GRPCInternalError ||
    e instanceof EtcdWatchStreamEnded ||
    isBrokenCircuitError(e)
  )
    return "unavailable";
  if (
    e instanceof EtcdPermissionDeniedError ||
    e instanceof EtcdAuthenticationFailedError ||
    e instanceof EtcdInvalidAuthTokenError ||
    e instanceof GRPCUnauthenticatedError ||
    e instanceof EtcdUserNotFoundError ||
    e instanceof EtcdRoleNotGrantedError
  )
    return "auth";
  if (e instanceof ClientClosedError) return "other";
  if (e instanceof CoordinatorError) return codeKinds.get(e.code);
  return undefined;
}

/**
 * How long to wait before retrying a failed etcd call of this kind (use with
 * `backoffDelayMs` or `new Backoff(...)`). NOSPACE and auth need an operator, so they are
 * retried slowly: from 2 s up to every 8-10 s, a steady line in the log rather than a flood,
 * and still within 10 s of the operator's fix. A transient failure is retried within a
 * second, then every few seconds (at most 5 s, so a recovered etcd is found quickly).
 */
export function etcdRetryBackoff(kind: EtcdErrorKind): BackoffOptions {
  switch (kind) {
    case "nospace":
    case "auth":
    case "too_large":
      return { baseMs: 2000, maxMs: 10_000 };
    case "compacted":
      // Re-reading is the fix, and it is cheap; the backoff only guards against a loop.
      return { baseMs: 100, maxMs: 5000 };
    default:
      return { baseMs: 1000, maxMs: 5000 };
  }
}

/** The CoordinatorError code for a failed etcd call of this kind. */
export function coordinatorCodeFor(kind: EtcdErrorKind): CoordinatorErrorCode {
  switch (kind) {
    case "nospace":
      return "etcd_nospace";
    case "auth":
      return "etcd_auth";
    case "unavailable":
      return "etcd_unavailable";
    default:
      return "etcd_failed";
  }
}

/** Wraps an etcd failure into a CoordinatorError whose code says what retrying can do. */
export function etcdFailure(e: unknown, what: string): CoordinatorError {
  if (e instanceof CoordinatorError) return e;
  const kind = classifyEtcdError(e);
  return new CoordinatorError(coordinatorCodeFor(kind), `${what}: ${describeEtcdError(e)}`, { cause: e });
}

/** One line describing an etcd failure (the class name and message, without the stack). */
export function describeEtcdError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // etcd3 rewrites "Error:" prefixes to its class names; keep the message as is.
  const message = e.message.replace(/\s+/g, " ").trim();
  return message === "" ? e.constructor.name : message;
}
