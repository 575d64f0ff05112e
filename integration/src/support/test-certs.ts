import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A certificate and its key, as files and as PEM text. */
export interface CertPair {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

/** What a certificate says about its holder. */
export interface CertSubject {
  /** The subject CN. */
  readonly cn: string;
  /** `DNS:...`, `IP:...`, `URI:...` entries of the subjectAltName. */
  readonly san?: readonly string[];
  /** Issue it already expired (valid 2020-01-01 .. 2020-01-02). */
  readonly expired?: boolean;
  /** A client (`clientAuth`) or server (`serverAuth`) certificate; both by default. */
  readonly usage?: "client" | "server";
}

/**
 * A throwaway CA in a temp dir, issuing certificates with the openssl CLI (Debian's, see
 * scripts/setup.sh): no certificate library in the dependency tree, and the same commands
 * docs/security.md shows operators. EC P-256 keys keep generation fast on a loaded machine.
 */
export class TestCa {
  readonly dir: string;
  readonly ca: CertPair;
  #serial = 1;

  private constructor(dir: string, ca: CertPair) {
    this.dir = dir;
    this.ca = ca;
  }

  /** Makes a new CA (`name` becomes its CN). */
  static async create(name = "test-ca"): Promise<TestCa> {
    const dir = await mkdtemp(join(tmpdir(), "shard-certs-"));
    const keyFile = join(dir, `${name}.key`);
    const certFile = join(dir, `${name}.crt`);
    await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile]);
    await run("openssl", [
      "req",
      "-x509",
      "-new",
      "-key",
      keyFile,
      "-sha256",
      "-days",
      "30",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      certFile,
    ]);
    return new TestCa(dir, await pairOf(certFile, keyFile));
  }

  /** Issues a certificate signed by this CA. */
  async issue(name: string, subject: CertSubject): Promise<CertPair> {
    const keyFile = join(this.dir, `${name}.key`);
    const csrFile = join(this.dir, `${name}.csr`);
    const certFile = join(this.dir, `${name}.crt`);
    const extFile = join(this.dir, `${name}.ext`);
    const usage =
      subject.usage === "client"
        ? "clientAuth"
        : subject.usage === "server"
          ? "serverAuth"
          : "serverAuth,clientAuth";
    const ext = [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      `extendedKeyUsage=${usage}`,
      ...(subject.san !== undefined && subject.san.length > 0
        ? [`subjectAltName=${subject.san.join(",")}`]
        : []),
    ];
    await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile]);
    await run("openssl", [
      "req",
      "-new",
      "-key",
      keyFile,
      "-subj",
      `/CN=${subject.cn.replace(/\//g, "\\/")}`,
      "-out",
      csrFile,
    ]);
    const serial = this.#serial++;
    if (subject.expired === true) {
      // `openssl x509 -req` cannot backdate; `openssl ca` can, with a minimal config.
      const conf = join(this.dir, `${name}.cnf`);
      const db = join(this.dir, `${name}.index`);
      await writeFile(db, "");
      await writeFile(join(this.dir, `${name}.serial`), `${serial.toString(16).padStart(4, "0")}\n`);
      await writeFile(
        conf,
        [
          "[ca]",
          "default_ca=test",
          "[test]",
          `database=${db}`,
          `serial=${join(this.dir, `${name}.serial`)}`,
          `new_certs_dir=${this.dir}`,
          `certificate=${this.ca.certFile}`,
          `private_key=${this.ca.keyFile}`,
          "default_md=sha256",
          "policy=any",
          "unique_subject=no",
          "copy_extensions=none",
          "[any]",
          "commonName=supplied",
          "[ext]",
          ...ext,
          "",
        ].join("\n"),
      );
      await run("openssl", [
        "ca",
        "-batch",
        "-notext",
        "-config",
        conf,
        "-extensions",
        "ext",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-in",
        csrFile,
        "-out",
        certFile,
      ]);
    } else {
      await writeFile(extFile, `${ext.join("\n")}\n`);
      await run("openssl", [
        "x509",
        "-req",
        "-in",
        csrFile,
        "-CA",
        this.ca.certFile,
        "-CAkey",
        this.ca.keyFile,
        "-set_serial",
        String(serial),
        "-days",
        "30",
        "-sha256",
        "-extfile",
        extFile,
        "-out",
        certFile,
      ]);
    }
    return pairOf(certFile, keyFile);
  }

  /** A server certificate for replicas on loopback (`localhost`, 127.0.0.1, ::1). */
  server(name = "replica"): Promise<CertPair> {
    return this.issue(name, {
      cn: name,
      san: ["DNS:localhost", "IP:127.0.0.1", "IP:::1"],
      usage: "server",
    });
  }

  /** Removes the directory. */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function pairOf(certFile: string, keyFile: string): Promise<CertPair> {
  return { certFile, keyFile, cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
}
