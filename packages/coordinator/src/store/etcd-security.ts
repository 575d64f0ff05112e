import { readFileSync } from "node:fs";
import { CoordinatorError } from "../errors.js";

/** Where the etcd credentials come from (`--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`, `--etcd-password-file`). */
export interface EtcdSecurityInput {
  /** PEM CA bundle that signed etcd's server certificates; with it, `https://` endpoints are verified against it. */
  readonly caFile?: string | undefined;
  /** PEM client certificate for etcd's `--client-cert-auth`. Requires `keyFile` and `caFile`. */
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  /** An etcd user (etcd's own auth, `etcdctl auth enable`). */
  readonly user?: string | undefined;
  /**
   * A file whose first line is the user's password; without it the `RM_ETCD_PASSWORD`
   * environment variable. Never a flag's value: it would show in `ps` and shell history.
   */
  readonly passwordFile?: string | undefined;
}

/** What the etcd3 client takes: TLS material and etcd user credentials. Holds a password: never log it. */
export interface EtcdSecurity {
  readonly credentials?: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer };
  readonly auth?: { username: string; password: string };
}

const empty = (v: string | undefined): v is undefined => v === undefined || v === "";

/**
 * Reads the files once (throws `CoordinatorError("invalid_config")` with one line naming the
 * flag and the file, never a secret). `env` is where `RM_ETCD_PASSWORD` is looked up.
 */
export function loadEtcdSecurity(
  input: EtcdSecurityInput,
  env: Readonly<Record<string, string | undefined>> = process.env,
): EtcdSecurity {
  const read = (flag: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new CoordinatorError("invalid_config", `${flag} ${path}: cannot read (${(e as Error).message})`);
    }
  };
  if (empty(input.certFile) !== empty(input.keyFile))
    throw new CoordinatorError("invalid_config", "--etcd-cert and --etcd-key go together");
  if (!empty(input.certFile) && empty(input.caFile))
    throw new CoordinatorError(
      "invalid_config",
      "--etcd-cert needs --etcd-ca (the CA of etcd's server certificates)",
    );
  const credentials = empty(input.caFile)
    ? undefined
    : {
        rootCertificate: read("--etcd-ca", input.caFile),
        ...(empty(input.certFile) || empty(input.keyFile)
          ? {}
          : {
              certChain: read("--etcd-cert", input.certFile),
              privateKey: read("--etcd-key", input.keyFile),
            }),
      };
  let auth: EtcdSecurity["auth"];
  if (!empty(input.user)) {
    const password = !empty(input.passwordFile)
      ? (read("--etcd-password-file", input.passwordFile).toString("utf8").split(/\r?\n/)[0] ?? "")
      : (env.RM_ETCD_PASSWORD ?? "");
    if (password === "")
      throw new CoordinatorError(
        "invalid_config",
        "--etcd-user needs a password: --etcd-password-file <file> or the RM_ETCD_PASSWORD environment variable",
      );
    auth = { username: input.user, password };
  } else if (!empty(input.passwordFile)) {
    throw new CoordinatorError("invalid_config", "--etcd-password-file needs --etcd-user");
  }
  return { ...(credentials === undefined ? {} : { credentials }), ...(auth === undefined ? {} : { auth }) };
}
