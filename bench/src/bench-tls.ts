import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { EtcdCluster } from "@org/integration/harness";
import { loadAgainst, RATE_FLAGS, type Run, ratios, row } from "./bench-heartbeat.js";
import type { Reporter } from "./report.js";
import { startEtcd, startLeader } from "./targets.js";

const run = promisify(execFile);

/** A CA and a server certificate for 127.0.0.1 in `dir`, made with the openssl CLI. */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const p = (f: string) => join(dir, f);
  await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p("ca.key")]);
  await run("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    p("ca.key"),
    "-days",
    "2",
    "-subj",
    "/CN=bench-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
    "-out",
    p("ca.crt"),
  ]);
  await run("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p("rm.key")]);
  await run("openssl", ["req", "-new", "-key", p("rm.key"), "-subj", "/CN=rm", "-out", p("rm.csr")]);
  await writeFile(p("rm.ext"), "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    p("rm.csr"),
    "-CA",
    p("ca.crt"),
    "-CAkey",
    p("ca.key"),
    "-set_serial",
    "1",
    "-days",
    "2",
    "-extfile",
    p("rm.ext"),
    "-out",
    p("rm.crt"),
  ]);
  return { ca: p("ca.crt"), cert: p("rm.crt"), key: p("rm.key") };
}

/**
 * The cost of TLS on the heartbeat path: the same leader and load (1 Hz per stream, 100
 * streams per connection), once plaintext and once over TLS (a P-256 server certificate,
 * no client certificates), back to back; the ratio row is TLS / plaintext.
 */
export async function benchTls(rep: Reporter, smoke: boolean): Promise<void> {
  const streams = smoke ? 100 : 5000;
  const measureMs = smoke ? 3000 : 10_000;
  const warmupMs = smoke ? 2500 : 4000;
  const dir = await mkdtemp(join(tmpdir(), "bench-tls-"));
  try {
    const certs = await makeCerts(dir);
    await using etcd: EtcdCluster = await startEtcd();
    const runs: Run[] = [];
    for (const tls of [false, true]) {
      rep.progress(`tls: leader, ${streams} streams, ${tls ? "TLS" : "plaintext"}`);
      const flags = tls ? [...RATE_FLAGS, "--tls-cert", certs.cert, "--tls-key", certs.key] : RATE_FLAGS;
      const target = await startLeader(etcd, flags);
      try {
        runs.push(
          await loadAgainst(target, streams, "rate", measureMs, warmupMs, tls ? certs.ca : undefined),
        );
      } finally {
        await target.stop();
      }
    }
    const [plain, tls] = runs;
    if (plain === undefined || tls === undefined) return;
    rep.table({
      measurement: "tls",
      title: "Heartbeat path: leader over plaintext vs TLS (same run)",
      settings: { rate: "1 Hz per stream", streams, measureMs, streamsPerConnection: 100 },
      rows: [
        { transport: "plaintext", ...row(plain) },
        { transport: "TLS", ...row(tls) },
      ],
    });
    rep.table({
      measurement: "tls.ratio",
      title: "Heartbeat path: TLS / plaintext",
      rows: [ratios(tls, plain)],
      notes: ["at 1 Hz acks/s are equal by construction: CPU per ack and p99 are what compare"],
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
