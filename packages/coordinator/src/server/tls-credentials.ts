import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import { ServerCredentials } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";

/** The PEM files of a TLS listener (see `--tls-cert`, `--tls-key`, `--tls-client-ca`). */
export interface TlsFiles {
  /** The server's certificate chain (PEM). */
  readonly certFile: string;
  /** The private key of `certFile` (PEM). Never logged. */
  readonly keyFile: string;
  /** With it, mutual TLS: every client must present a certificate this CA (PEM bundle) signed. */
  readonly clientCaFile?: string | undefined;
}

/** What a TLS listener is serving: the certificate's subject and validity, for logs and /status. */
export interface TlsSummary {
  readonly subject: string;
  readonly fingerprint256: string;
  readonly validTo: string;
  readonly mutual: boolean;
}

interface Loaded {
  readonly context: SecureContextOptions;
  readonly summary: TlsSummary;
  readonly stamp: string;
}

function stampOf(files: TlsFiles): string {
  return [files.certFile, files.keyFile, files.clientCaFile]
    .map((f) => {
      if (f === undefined) return "";
      const s = statSync(f);
      return `${s.mtimeMs}:${s.size}:${s.ino}`;
    })
    .join("|");
}

/**
 * Reads and checks the files: the key must match the certificate (`createSecureContext`
 * throws otherwise), so a half-written rotation is refused rather than served.
 * Throws `CoordinatorError("invalid_config")` naming the file, never its contents.
 */
export function loadTlsFiles(files: TlsFiles): Loaded {
  const read = (flag: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new CoordinatorError("invalid_config", `${flag} ${path}: cannot read (${(e as Error).message})`);
    }
  };
  const stamp = stampOf(files);
  const cert = read("--tls-cert", files.certFile);
  const key = read("--tls-key", files.keyFile);
  const ca = files.clientCaFile === undefined ? undefined : read("--tls-client-ca", files.clientCaFile);
  const context: SecureContextOptions = { cert, key, ...(ca === undefined ? {} : { ca }) };
  let x509: X509Certificate;
  try {
    createSecureContext(context);
    x509 = new X509Certificate(cert);
  } catch (e) {
    // OpenSSL's reason ("key values mismatch", "no start line") names no secret.
    throw new CoordinatorError(
      "invalid_config",
      `--tls-cert ${files.certFile} / --tls-key ${files.keyFile}${ca === undefined ? "" : ` / --tls-client-ca ${files.clientCaFile}`}: ${(e as Error).message}`,
    );
  }
  return {
    context,
    stamp,
    summary: {
      subject: x509.subject.replace(/\n/g, ", "),
      fingerprint256: x509.fingerprint256,
      validTo: new Date(x509.validTo).toISOString(),
      mutual: ca !== undefined,
    },
  };
}

/**
 * grpc-js server credentials whose certificate, key and client CA are re-read when the files
 * change (checked every `reloadIntervalMs`), so rotating a certificate needs no restart.
 * grpc-js applies a new secure context to new connections (`Http2SecureServer.setSecureContext`);
 * open connections keep the one they were made with. A change that does not load (a key that
 * does not match its certificate, a file half written) is logged and the previous pair is
 * kept; it is tried again at the next change.
 *
 * With a client CA, clients must present a certificate it signed (`requestCert` and
 * `rejectUnauthorized`): an unknown CA or an expired certificate fails the handshake.
 */
export class ReloadingServerCredentials extends ServerCredentials {
  readonly #files: TlsFiles;
  readonly #log: Logger;
  #current: Loaded;
  /** The files' stamp whose load failed (logged once, not at every tick). */
  #failed = "";
  #timer: NodeJS.Timeout | undefined;

  private constructor(files: TlsFiles, loaded: Loaded, log: Logger) {
    super(
      // Client certificates: requested, and required and verified, only with a client CA.
      { requestCert: files.clientCaFile !== undefined, rejectUnauthorized: files.clientCaFile !== undefined },
      loaded.context,
    );
    this.#files = files;
    this.#current = loaded;
    this.#log = log;
  }

  /** Loads the files (throws `invalid_config` when they do not) and starts watching them. */
  static create(files: TlsFiles, log: Logger, reloadIntervalMs = 1000): ReloadingServerCredentials {
    const creds = new ReloadingServerCredentials(files, loadTlsFiles(files), log);
    creds.#timer = setInterval(() => creds.#check(), reloadIntervalMs);
    creds.#timer.unref();
    return creds;
  }

  /** The certificate served now. */
  get summary(): TlsSummary {
    return this.#current.summary;
  }

  #check(): void {
    let stamp: string;
    try {
      stamp = stampOf(this.#files);
    } catch {
      return; // A file replaced by rename is briefly absent: look again at the next tick.
    }
    if (stamp === this.#current.stamp || stamp === this.#failed) return;
    try {
      const next = loadTlsFiles(this.#files);
      this.#current = next;
      this.updateSecureContextOptions(next.context);
      this.#log.info({ event: "tls_reloaded", ...next.summary });
    } catch (e) {
      this.#failed = stamp;
      this.#log.warn({ event: "tls_reload_failed", err: (e as Error).message });
    }
  }

  /** Stops watching the files. Safe to call twice. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}
