import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { z } from "zod";

const scryptAsync = promisify(scrypt) as (
  password: string | Buffer,
  salt: Buffer,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

/**
 * What a token allows in its group:
 * - `worker`: join (Hello, HeartbeatStream) under any node id, GetShardInfo and FetchShardData;
 * - `submit`: TaskService (submit, get, list, watch, cancel tasks);
 * - `admin`: both, and PutShardData (loading the group's records).
 */
export type TokenRole = "worker" | "submit" | "admin";
export const tokenRoles: readonly TokenRole[] = ["worker", "submit", "admin"];

/** What is stored in etcd for one token, at `<ns>/auth/tokens/<group>/<id>`: never the secret. */
export const tokenRecordSchema = z.object({
  id: z.string(),
  group: z.string(),
  role: z.enum(["worker", "submit", "admin"]),
  /** base64 salt and scrypt hash of the secret. */
  salt: z.string(),
  hash: z.string(),
  /** scrypt cost parameter N (r = 8, p = 1). */
  n: z.number().int().positive(),
  createdAt: z.string(),
  description: z.string().optional(),
});
export type TokenRecord = z.infer<typeof tokenRecordSchema>;

/** scrypt cost: N = 2^14, r = 8 (16 MiB, tens of ms): checked once per token per replica, then cached. */
const scryptN = 16_384;
const keyLen = 32;
const scryptOptions = (n: number) => ({ N: n, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });

/** A token as given to the user: `shd_<id>_<secret>`; the id finds the record, the secret proves it. */
const tokenPattern = /^shd_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$/;

/** Splits a presented token; undefined when it is not one of ours (never echo it back). */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = tokenPattern.exec(token);
  return m === null || m[1] === undefined || m[2] === undefined ? undefined : { id: m[1], secret: m[2] };
}

/** Makes a new token: the secret to show once, and the record to store (salted scrypt hash). */
export async function newToken(
  group: string,
  role: TokenRole,
  description?: string,
): Promise<{ token: string; record: TokenRecord }> {
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  const salt = randomBytes(16);
  const hash = await scryptAsync(secret, salt, keyLen, scryptOptions(scryptN));
  return {
    token: `shd_${id}_${secret}`,
    record: {
      id,
      group,
      role,
      salt: salt.toString("base64"),
      hash: hash.toString("base64"),
      n: scryptN,
      createdAt: new Date().toISOString(),
      ...(description === undefined ? {} : { description }),
    },
  };
}

/** Whether `secret` is the one `record` was made from (constant-time comparison). */
export async function verifySecret(record: TokenRecord, secret: string): Promise<boolean> {
  const expected = Buffer.from(record.hash, "base64");
  const got = await scryptAsync(
    secret,
    Buffer.from(record.salt, "base64"),
    expected.length,
    scryptOptions(record.n),
  );
  return got.length === expected.length && timingSafeEqual(got, expected);
}
