import { createHash } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { type Metadata, status } from "@grpc/grpc-js";
import type { Etcd3, Watcher } from "etcd3";
import type { Logger } from "pino";
import {
  parseToken,
  type TokenRecord,
  type TokenRole,
  tokenRecordSchema,
  verifySecret,
} from "./auth-tokens.js";
import { StatusError } from "./shard-server.js";

/**
 * How callers prove who they are (`--auth`):
 * - `none`: nobody is asked (the default; every existing deployment keeps working);
 * - `tokens`: a bearer token of the group in `authorization: Bearer <token>` on every call;
 * - `mtls`: the client certificate's identity (needs `--tls-client-ca`).
 */
export type AuthMode = "none" | "tokens" | "mtls";
export const authModes: readonly AuthMode[] = ["none", "tokens", "mtls"];

/**
 * What a call needs in a group:
 * - `worker`: Hello (join under `nodeId`), GetShardInfo, FetchShardData;
 * - `data-write`: PutShardData;
 * - `submit`: every TaskService call (submit, get, list, watch, cancel).
 */
export type Right = "worker" | "data-write" | "submit";

/** Who a caller proved to be. Carries no secret (safe to log). */
export type Identity =
  | { readonly kind: "anonymous" }
  | { readonly kind: "token"; readonly tokenId: string; readonly group: string; readonly role: TokenRole }
  | { readonly kind: "certificate"; readonly subject: string; readonly grants: readonly Grant[] };

/** One right a certificate grants: in `group`, for `nodeId` (`*`: any) when the right is `worker`. */
export interface Grant {
  readonly group: string;
  readonly rights: readonly Right[];
  readonly nodeId: string;
}

/** What grpc-js tells of a call (every kind of server call has both). */
export interface CallCredentials {
  readonly metadata: Metadata;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate };
}

const namePart = "[A-Za-z0-9._:-]{1,128}";
const uriGrants: readonly [RegExp, (m: RegExpExecArray) => Grant][] = [
  [new RegExp(`^shard://(${namePart})/(\\*|${namePart})$`), (m) => grant(m[1], ["worker"], m[2])],
  [new RegExp(`^shard-submit://(${namePart})$`), (m) => grant(m[1], ["submit"], "*")],
  [new RegExp(`^shard-data://(${namePart})$`), (m) => grant(m[1], ["data-write"], "*")],
  [new RegExp(`^shard-admin://(${namePart})$`), (m) => grant(m[1], ["worker", "submit", "data-write"], "*")],
];
const cnGrant = new RegExp(`^(${namePart})/(\\*|${namePart})$`);

function grant(group: string | undefined, rights: readonly Right[], nodeId: string | undefined): Grant {
  return { group: group ?? "", rights, nodeId: nodeId ?? "" };
}

/**
 * The grants of a client certificate, in this order:
 * 1. its URI SANs of our schemes (`shard://<group>/<nodeId>`, `shard://<group>/*`,
 *    `shard-submit://<group>`, `shard-data://<group>`, `shard-admin://<group>`); every one counts;
 * 2. only when it has none of those: its subject CN read as `<group>/<nodeId>` or `<group>/*`
 *    (a worker grant);
 * 3. otherwise nothing (every call is PERMISSION_DENIED).
 */
export function certificateGrants(cert: Pick<PeerCertificate, "subject" | "subjectaltname">): Grant[] {
  const grants: Grant[] = [];
  for (const entry of (cert.subjectaltname ?? "").split(/,\s*/)) {
    if (!entry.startsWith("URI:")) continue;
    const uri = entry.slice(4);
    for (const [re, make] of uriGrants) {
      const m = re.exec(uri);
      if (m !== null) grants.push(make(m));
    }
  }
  if (grants.length > 0) return grants;
  const cn = cert.subject?.CN;
  const m = typeof cn === "string" ? cnGrant.exec(cn) : null;
  return m === null ? [] : [grant(m[1], ["worker"], m[2])];
}

const roleRights: Readonly<Record<TokenRole, readonly Right[]>> = {
  worker: ["worker"],
  submit: ["submit"],
  admin: ["worker", "submit", "data-write"],
};

/** Whether `identity` may use `right` in `group` (as `nodeId` for `worker`). */
export function allows(identity: Identity, group: string, right: Right, nodeId?: string): boolean {
  switch (identity.kind) {
    case "anonymous":
      return false;
    case "token":
      return identity.group === group && roleRights[identity.role].includes(right);
    case "certificate":
      return identity.grants.some(
        (g) =>
          g.group === group &&
          g.rights.includes(right) &&
          (right !== "worker" || g.nodeId === "*" || nodeId === undefined || g.nodeId === nodeId),
      );
  }
}

function describe(identity: Identity): string {
  switch (identity.kind) {
    case "anonymous":
      return "an anonymous caller";
    case "token":
      return `token ${identity.tokenId} (group ${identity.group}, role ${identity.role})`;
    case "certificate":
      return `certificate ${identity.subject}`;
  }
}

export interface AuthorizerOptions {
  readonly mode: AuthMode;
  readonly client: Etcd3;
  /** `<ns>/auth/tokens/`. */
  readonly tokensPrefix: string;
  readonly log: Logger;
}

/**
 * Authenticates calls and checks their rights (see {@link AuthMode}, {@link Right}). In
 * `tokens` mode it holds every token record of `<ns>/auth/tokens/` (salted scrypt hashes,
 * never secrets), read at start and then watched: a revoked token is refused from the next
 * call on, and every stream it opened is ended with UNAUTHENTICATED at once (see
 * {@link Authorizer.onRevoked}). A verified token is remembered by its SHA-256 so that
 * scrypt runs once per token and replica, not per call.
 *
 * Failures: no credentials, or credentials that prove nothing (an unknown, wrong or revoked
 * token) are UNAUTHENTICATED; valid credentials without the right are PERMISSION_DENIED. The
 * details never quote a token.
 */
export class Authorizer {
  readonly mode: AuthMode;
  readonly #o: AuthorizerOptions;
  readonly #records = new Map<string, TokenRecord>();
  /** sha256(token) -> token id, for tokens whose secret was verified. */
  readonly #verified = new Map<string, string>();
  readonly #revocations = new Map<string, Set<() => void>>();
  #watcher: Watcher | undefined;
  /** Token records read (tokens mode); until then token calls are UNAVAILABLE. */
  #loaded = false;
  readonly #stop = new AbortController();
  #loading: Promise<void> | undefined;

  private constructor(o: AuthorizerOptions) {
    this.mode = o.mode;
    this.#o = o;
  }

  /**
   * Starts; in `tokens` mode it reads the token records and watches them, retrying every
   * second while etcd does not answer (it does not wait: the replica serves at once, and
   * token calls are UNAVAILABLE until the records are read).
   */
  static start(o: AuthorizerOptions): Authorizer {
    const a = new Authorizer(o);
    if (o.mode === "tokens") a.#loading = a.#loadLoop();
    return a;
  }

  async #loadLoop(): Promise<void> {
    while (!this.#stop.signal.aborted) {
      try {
        await this.#load();
        return;
      } catch (e) {
        this.#o.log.warn({ event: "auth_load_failed", err: String(e), retryMs: 1000 });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 1000);
          this.#stop.signal.addEventListener(
            "abort",
            () => {
              clearTimeout(t);
              resolve();
            },
            { once: true },
          );
        });
      }
    }
  }

  async #load(): Promise<void> {
    const prefix = this.#o.tokensPrefix;
    const res = await this.#o.client.getAll().prefix(prefix).exec();
    for (const kv of res.kvs) this.#put(kv.key.toString(), kv.value.toString());
    const watcher = await this.#o.client
      .watch()
      .prefix(prefix)
      .startRevision(String(BigInt(res.header.revision) + 1n))
      .create();
    watcher.on("put", (kv) => this.#put(kv.key.toString(), kv.value.toString()));
    watcher.on("delete", (kv) => this.#delete(kv.key.toString()));
    watcher.on("error", (e: unknown) => this.#o.log.warn({ event: "auth_watch_error", err: String(e) }));
    this.#watcher = watcher;
    this.#loaded = true;
    this.#o.log.info({ event: "auth_tokens_loaded", tokens: this.#records.size });
    if (this.#stop.signal.aborted) await watcher.cancel();
  }

  #put(key: string, value: string): void {
    try {
      const record = tokenRecordSchema.parse(JSON.parse(value));
      this.#records.set(record.id, record);
    } catch {
      this.#o.log.warn({ event: "auth_bad_token_record", key });
    }
  }

  #delete(key: string): void {
    const id = key.slice(key.lastIndexOf("/") + 1);
    this.#records.delete(id);
    for (const [hash, tokenId] of this.#verified) if (tokenId === id) this.#verified.delete(hash);
    const ends = this.#revocations.get(id);
    this.#revocations.delete(id);
    this.#o.log.info({ event: "token_revoked", tokenId: id, streamsEnded: ends?.size ?? 0 });
    for (const end of ends ?? []) end();
  }

  /** Who the caller is; throws UNAUTHENTICATED when it proves nothing (mode `none`: anonymous). */
  async authenticate(call: CallCredentials): Promise<Identity> {
    if (this.mode === "none") return { kind: "anonymous" };
    if (this.mode === "mtls") {
      let cert: PeerCertificate | undefined;
      try {
        cert = call.getAuthContext().sslPeerCertificate;
      } catch {
        cert = undefined;
      }
      if (cert === undefined)
        throw new StatusError(status.UNAUTHENTICATED, "a client certificate is required (mutual TLS)");
      const subject = `CN=${String(cert.subject?.CN ?? "")}${cert.subjectaltname === undefined ? "" : ` (${cert.subjectaltname})`}`;
      return { kind: "certificate", subject, grants: certificateGrants(cert) };
    }
    if (!this.#loaded)
      throw new StatusError(
        status.UNAVAILABLE,
        "this replica has not read the token records from etcd yet; retry",
      );
    const header = call.metadata.get("authorization")[0];
    const value = typeof header === "string" ? header : header?.toString();
    if (value === undefined || value === "")
      throw new StatusError(
        status.UNAUTHENTICATED,
        "credentials required: send authorization: Bearer <token>",
      );
    const m = /^Bearer ([\x21-\x7e]+)$/i.exec(value);
    const parsed = m?.[1] === undefined ? undefined : parseToken(m[1]);
    if (m?.[1] === undefined || parsed === undefined)
      throw new StatusError(status.UNAUTHENTICATED, "malformed bearer token");
    const record = this.#records.get(parsed.id);
    if (record === undefined) throw new StatusError(status.UNAUTHENTICATED, "unknown or revoked token");
    const digest = createHash("sha256").update(m[1]).digest("hex");
    if (this.#verified.get(digest) !== parsed.id) {
      if (!(await verifySecret(record, parsed.secret)))
        throw new StatusError(status.UNAUTHENTICATED, "unknown or revoked token");
      // Revoked while scrypt ran: the record is gone.
      if (!this.#records.has(parsed.id))
        throw new StatusError(status.UNAUTHENTICATED, "unknown or revoked token");
      this.#verified.set(digest, parsed.id);
    }
    return { kind: "token", tokenId: record.id, group: record.group, role: record.role };
  }

  /** Throws PERMISSION_DENIED unless `identity` has `right` in `group` (as `nodeId` for `worker`). */
  authorize(identity: Identity, group: string, right: Right, nodeId?: string): void {
    if (this.mode === "none" || allows(identity, group, right, nodeId)) return;
    const as = right === "worker" && nodeId !== undefined ? ` as node ${nodeId}` : "";
    throw new StatusError(
      status.PERMISSION_DENIED,
      `${describe(identity)} does not allow ${right} in group ${group}${as}`,
    );
  }

  /** authenticate() then authorize(). */
  async check(call: CallCredentials, group: string, right: Right, nodeId?: string): Promise<Identity> {
    const identity = await this.authenticate(call);
    this.authorize(identity, group, right, nodeId);
    return identity;
  }

  /**
   * Calls `end` when the token behind `identity` is revoked (nothing for other identities).
   * Returns the function that forgets it (call it when the stream ends).
   */
  onRevoked(identity: Identity, end: () => void): () => void {
    if (identity.kind !== "token") return () => undefined;
    let set = this.#revocations.get(identity.tokenId);
    if (set === undefined) {
      set = new Set();
      this.#revocations.set(identity.tokenId, set);
    }
    set.add(end);
    return () => {
      this.#revocations.get(identity.tokenId)?.delete(end);
    };
  }

  /** Stops watching. Safe to call twice. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#loading;
    const w = this.#watcher;
    this.#watcher = undefined;
    await w?.cancel();
  }
}
