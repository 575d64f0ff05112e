import { connect as tlsConnect } from "node:tls";
import type { ResolvedTransportSecurity } from "./transport-security.js";

/**
 * Why a replica dropped our connection before any HTTP/2 frame, when TLS is the reason, as
 * one line; undefined when it is not (or cannot be told). Two cases look like a bare reset to
 * the HTTP/2 client, and retrying fixes neither:
 *
 * - we speak plaintext and the replica TLS: a TLS handshake with it succeeds;
 * - we speak TLS and the replica refused our client certificate after the handshake (TLS 1.3:
 *   Node verifies the client certificate once the handshake is done and closes the socket
 *   without an alert, so the client's handshake succeeded): a gRPC server sends its HTTP/2
 *   SETTINGS right after the handshake, a server that refused us closes instead.
 *
 * One short TLS connection of its own (at most `timeoutMs`); never rejects.
 */
export function diagnoseTlsMismatch(
  target: string,
  security: ResolvedTransportSecurity,
  timeoutMs = 1000,
): Promise<string | undefined> {
  const i = target.lastIndexOf(":");
  const host = target.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(target.slice(i + 1));
  const plaintext = security.scheme === "http";
  return new Promise((resolve) => {
    let settled = false;
    const finish = (v: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    const socket = tlsConnect({
      host,
      port,
      ALPNProtocols: ["h2"],
      // Plaintext side: only whether the peer speaks TLS at all matters, not whom it is.
      ...(plaintext ? { rejectUnauthorized: false } : security.sessionOptions),
    });
    socket.on("error", (e: Error & { code?: string }) =>
      finish(
        plaintext || e.code === undefined || !/^ERR_SSL_/.test(e.code)
          ? undefined
          : `the replica refused the TLS handshake (${e.code})`,
      ),
    );
    socket.once("secureConnect", () => {
      if (plaintext) {
        finish("the replica speaks TLS and this client plaintext: give the tls option (tls: { ca })");
        return;
      }
      socket.once("data", () => finish(undefined));
      socket.once("close", () =>
        finish(
          "the replica closed the connection right after the TLS handshake: it does not accept this client certificate (signed by a CA it does not trust, expired, or none)",
        ),
      );
    });
  });
}
