import * as http2 from "node:http2";
import { plaintextTransport, type ResolvedTransportSecurity } from "./transport-security.js";

/**
 * Whether the process at `target` answers an HTTP/2 PING within `timeoutMs`, on a connection
 * of its own. This tells a live replica from one that only *looks* reachable: a paused
 * (SIGSTOPped) or wedged process still has its kernel accept TCP connections, but nothing
 * answers above that. Resolves false on any error, on timeout, or when `signal` aborts; never
 * rejects, and leaves nothing open behind it.
 */
export function probeReplica(
  target: string,
  timeoutMs: number,
  signal?: AbortSignal,
  security: ResolvedTransportSecurity = plaintextTransport,
): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    let settled = false;
    let session: http2.ClientHttp2Session | undefined;
    const finish = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      session?.destroy();
      resolve(ok);
    };
    const onAbort = () => finish(false);
    const timer = setTimeout(() => finish(false), timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      session = http2.connect(`${security.scheme}://${target}`, security.sessionOptions);
    } catch {
      finish(false);
      return;
    }
    // Stays attached: an error after destroy() must not become an uncaught exception.
    session.on("error", () => finish(false));
    session.once("connect", () => {
      if (settled || session === undefined || session.destroyed) return;
      try {
        session.ping((err) => finish(err === null));
      } catch {
        finish(false);
      }
    });
  });
}
