import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CoordinatorError } from "../errors.js";
import { loadEtcdSecurity } from "./etcd-security.js";

describe("loadEtcdSecurity", () => {
  const dir = mkdtempSync(join(tmpdir(), "etcd-sec-"));
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it("is empty without flags, and reads a password from its file's first line or RM_ETCD_PASSWORD", () => {
    expect(loadEtcdSecurity({}, {})).toEqual({});
    expect(loadEtcdSecurity({ user: "u", passwordFile: file("pw", "s3cret\nignored\n") }, {}).auth).toEqual({
      username: "u",
      password: "s3cret",
    });
    expect(loadEtcdSecurity({ user: "u" }, { RM_ETCD_PASSWORD: "env-pw" }).auth?.password).toBe("env-pw");
  });

  it("reads the CA and the client pair", () => {
    const s = loadEtcdSecurity(
      { caFile: file("ca", "CA"), certFile: file("c", "CERT"), keyFile: file("k", "KEY") },
      {},
    );
    expect(s.credentials?.rootCertificate.toString()).toBe("CA");
    expect(s.credentials?.certChain?.toString()).toBe("CERT");
    expect(s.credentials?.privateKey?.toString()).toBe("KEY");
  });

  for (const [name, input, re] of [
    ["a user without a password", { user: "u" }, /RM_ETCD_PASSWORD/],
    ["a password file without a user", { passwordFile: "/x" }, /--etcd-user/],
    ["a certificate without its key", { caFile: "/x", certFile: "/y" }, /--etcd-key/],
    ["a certificate without a CA", { certFile: "/y", keyFile: "/z" }, /--etcd-ca/],
    ["an unreadable file", { caFile: join(dir, "missing") }, /--etcd-ca .*missing/],
  ] as const) {
    it(`refuses ${name} with one line of invalid_config`, () => {
      let err: unknown;
      try {
        loadEtcdSecurity(input, {});
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CoordinatorError);
      expect((err as CoordinatorError).code).toBe("invalid_config");
      expect((err as CoordinatorError).message).toMatch(re);
    });
  }
});
