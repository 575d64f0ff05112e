import { describe, expect, it } from "vitest";
import { newToken, parseToken, verifySecret } from "./auth-tokens.js";
import { allows, certificateGrants, type Identity } from "./authorizer.js";

describe("certificateGrants", () => {
  it("reads every URI SAN of our schemes, in preference to the CN", () => {
    const grants = certificateGrants({
      subject: { CN: "g9/n9" } as never,
      subjectaltname: "DNS:w1.example, URI:shard://g1/w1, URI:shard-submit://g2, URI:https://elsewhere",
    });
    expect(grants).toEqual([
      { group: "g1", rights: ["worker"], nodeId: "w1" },
      { group: "g2", rights: ["submit"], nodeId: "*" },
    ]);
  });

  it("falls back to a CN of the form <group>/<nodeId>, and grants nothing otherwise", () => {
    expect(certificateGrants({ subject: { CN: "g1/*" } as never, subjectaltname: "DNS:x" })).toEqual([
      { group: "g1", rights: ["worker"], nodeId: "*" },
    ]);
    expect(
      certificateGrants({ subject: { CN: "worker-7" } as never, subjectaltname: undefined as never }),
    ).toEqual([]);
  });
});

describe("allows", () => {
  const cert = (san: string): Identity => ({
    kind: "certificate",
    subject: "CN=x",
    grants: certificateGrants({ subject: { CN: "x" } as never, subjectaltname: san }),
  });
  it("binds worker certificates to their group and node id", () => {
    expect(allows(cert("URI:shard://g1/w1"), "g1", "worker", "w1")).toBe(true);
    expect(allows(cert("URI:shard://g1/w1"), "g1", "worker", "w2")).toBe(false);
    expect(allows(cert("URI:shard://g1/w1"), "g2", "worker", "w1")).toBe(false);
    expect(allows(cert("URI:shard://g1/*"), "g1", "worker", "w2")).toBe(true);
    expect(allows(cert("URI:shard://g1/*"), "g1", "submit")).toBe(false);
    expect(allows(cert("URI:shard-admin://g1"), "g1", "data-write")).toBe(true);
  });
  it("gives tokens their role's rights in their group only", () => {
    const t = (role: "worker" | "submit" | "admin"): Identity => ({
      kind: "token",
      tokenId: "0",
      group: "g1",
      role,
    });
    expect(allows(t("worker"), "g1", "worker", "any")).toBe(true);
    expect(allows(t("worker"), "g1", "submit")).toBe(false);
    expect(allows(t("submit"), "g1", "submit")).toBe(true);
    expect(allows(t("submit"), "g1", "worker", "n")).toBe(false);
    expect(allows(t("admin"), "g1", "data-write")).toBe(true);
    expect(allows(t("admin"), "g2", "worker", "n")).toBe(false);
    expect(allows({ kind: "anonymous" }, "g1", "worker", "n")).toBe(false);
  });
});

describe("tokens", () => {
  it("stores a salted hash, never the secret, and verifies only the right secret", async () => {
    const { token, record } = await newToken("g1", "worker");
    const parsed = parseToken(token);
    expect(parsed?.id).toBe(record.id);
    expect(JSON.stringify(record)).not.toContain(parsed?.secret);
    expect(await verifySecret(record, parsed?.secret ?? "")).toBe(true);
    expect(await verifySecret(record, `${parsed?.secret.slice(0, -1)}x`)).toBe(false);
    expect(parseToken("Bearer nonsense")).toBeUndefined();
  });
});
