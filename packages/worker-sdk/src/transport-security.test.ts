import { describe, expect, it } from "vitest";
import { WorkerError } from "./errors.js";
import { resolveTransportSecurity } from "./transport-security.js";

describe("resolveTransportSecurity", () => {
  it("is plaintext without tls, https with it, and adds the token as a bearer header", () => {
    expect(resolveTransportSecurity({})).toMatchObject({ scheme: "http", interceptors: [] });
    const s = resolveTransportSecurity({ tls: { ca: "CA", serverName: "rm" }, token: "shd_x" });
    expect(s.scheme).toBe("https");
    // Both tuned the same way for data reads (TCP_NODELAY, a 4 MiB stream window).
    const tuning = { noDelay: true, settings: { initialWindowSize: 4 << 20 } };
    expect(resolveTransportSecurity({}).sessionOptions).toEqual(tuning);
    expect(s.sessionOptions).toEqual({ ...tuning, ca: "CA", servername: "rm" });
    expect(s.interceptors).toHaveLength(1);
  });

  for (const [name, input] of [
    ["a certificate without its key", { tls: { cert: "C" } }],
    ["a token with a space", { token: "a b" }],
    ["a token with a newline (header injection)", { token: "a\r\nx-evil: 1" }],
    ["an empty token", { token: "" }],
  ] as const) {
    it(`refuses ${name} with invalid_options, without quoting it`, () => {
      let err: unknown;
      try {
        resolveTransportSecurity(input);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WorkerError);
      expect((err as WorkerError).code).toBe("invalid_options");
      if ("token" in input && input.token !== "")
        expect((err as WorkerError).message).not.toContain(input.token);
    });
  }
});
