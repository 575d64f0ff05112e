import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chownSync, closeSync, existsSync, openSync, readdirSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { HarnessConfigError, HarnessError } from "./errors.js";
import { getFreePort, LOOPBACK_HOST } from "./free-port.js";
import { readLogTail } from "./log-tail.js";
import {
  sweepOrphanedTempDirs,
  tempDirPrefix,
  trackChild,
  trackTempDir,
  untrackTempDir,
} from "./process-registry.js";

/** PostgreSQL did not start, or stopped answering. */
export class PostgresStartError extends HarnessError {
  override readonly name: string = "PostgresStartError";
}

/** Options of {@link startPostgres}. */
export interface PostgresOptions {
  /** Superuser name. @default "postgres" */
  readonly user?: string;
  /** Its password (scram-sha-256 over TCP). @default a random one */
  readonly password?: string;
  /** How long to wait for the server to accept connections, in ms. @default 30000 */
  readonly startTimeoutMs?: number;
}

/** A throwaway PostgreSQL server on a free loopback port, data in a temp dir. */
export interface PostgresServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: "postgres";
  /** A file holding the password (readable by this process), for `passwordFile` configs. */
  readonly passwordFile: string;
  /** `postgres://user:password@host:port/postgres`. */
  readonly url: string;
  readonly running: boolean;
  /** A pg client connected as the superuser (the caller ends it). */
  connect(): Promise<pg.Client>;
  /** Fast shutdown (open sessions are terminated), then start again on the same port and data. */
  restart(): Promise<void>;
  /** Fast shutdown, leaving the data; `start()` brings it back. */
  stopServer(): Promise<void>;
  /** Starts a server stopped with `stopServer()` or `kill()`. */
  start(): Promise<void>;
  /** SIGKILL the postmaster (a crash: its backends die with it). */
  kill(): Promise<void>;
  /** Stops the server for good and removes its data. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Where PostgreSQL's server binaries are: the directory of `initdb` on PATH, else the newest
 * Debian `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package does not put
 * them on PATH).
 */
export function findPostgresBin(): string {
  const which = spawnSync("sh", ["-c", "command -v initdb"], { encoding: "utf8" });
  const onPath = which.status === 0 ? which.stdout.trim() : "";
  if (onPath !== "") {
    const real = spawnSync("readlink", ["-f", onPath], { encoding: "utf8" }).stdout.trim() || onPath;
    return real.slice(0, real.lastIndexOf("/"));
  }
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined)
    throw new HarnessConfigError(
      "PostgreSQL not found: no initdb on PATH nor under /usr/lib/postgresql/*/bin (install Debian's postgresql; scripts/setup.sh does)",
    );
  return join(root, newest, "bin");
}

/**
 * PostgreSQL refuses to run as root. As root the harness runs it as the `postgres` system
 * user (created by Debian's package) or `nobody`, through `setpriv`; otherwise as we are.
 */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ["postgres", "nobody"]) {
    const id = spawnSync("id", ["-u", name], { encoding: "utf8" });
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
    if (id.status === 0 && gid.status === 0) return { uid: Number(id.stdout), gid: Number(gid.stdout) };
  }
  throw new HarnessConfigError("running as root and neither a postgres nor a nobody user exists");
}

/** `command args` as that user, killed by the kernel if this process dies (pdeathsig). */
function command(bin: string, args: readonly string[], user: { uid: number; gid: number } | undefined) {
  const setpriv = spawnSync("setpriv", ["--help"], { encoding: "utf8" });
  const has = setpriv.status === 0 && setpriv.stdout.includes("--pdeathsig");
  if (!has) {
    if (user !== undefined)
      throw new HarnessConfigError("running as root needs setpriv (util-linux) to drop to a user");
    return { command: bin, args: [...args] };
  }
  const drop = user === undefined ? [] : [`--reuid=${user.uid}`, `--regid=${user.gid}`, "--clear-groups"];
  return { command: "setpriv", args: ["--pdeathsig", "KILL", ...drop, "--", bin, ...args] };
}

/**
 * Starts PostgreSQL: `initdb` into a fresh temp dir (named like the etcd harness's, so the
 * orphan sweep and the leak check in scripts/test.sh cover it), then `postgres` on a free
 * loopback port with durability off (fsync, synchronous_commit: a test server). Tracked like
 * an etcd member: killed and removed if the test process exits without `stop()`.
 *
 * @example
 * ```ts
 * const db = await startPostgres();
 * const client = await db.connect();
 * await client.query("SELECT 1");
 * await client.end();
 * await db.stop();
 * ```
 */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  sweepOrphanedTempDirs();
  const bin = findPostgresBin();
  const user = runAs();
  const dir = await mkdtemp(tempDirPrefix("pg"));
  trackTempDir(dir);
  const superuser = options.user ?? "postgres";
  const password = options.password ?? `pw-${Math.random().toString(36).slice(2)}`;
  const passwordFile = join(dir, "password");
  const dataDir = join(dir, "data");
  const logFile = join(dir, "postgres.log");
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let port = 0;
  let stopping: Promise<void> | undefined;

  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;

  const spawnServer = async () => {
    const log = openSync(logFile, "a");
    const c = command(
      join(bin, "postgres"),
      [
        "-D",
        dataDir,
        "-p",
        String(port),
        "-c",
        `listen_addresses=${LOOPBACK_HOST}`,
        "-c",
        `unix_socket_directories=${dir}`,
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
      ],
      user,
    );
    try {
      child = spawn(c.command, c.args, { stdio: ["ignore", log, log] });
    } finally {
      closeSync(log);
    }
    const ch = child;
    exited = new Promise((resolve) => {
      ch.once("exit", () => resolve());
      ch.once("error", () => resolve());
    });
    if (ch.pid !== undefined) trackChild(ch);
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      if (!running()) break;
      const client = new pg.Client({
        host: LOOPBACK_HOST,
        port,
        user: superuser,
        password,
        database: "postgres",
      });
      client.on("error", () => undefined);
      try {
        await client.connect();
        await client.query("SELECT 1");
        await client.end();
        return;
      } catch (e) {
        last = e instanceof Error ? e.message : String(e);
        await client.end().catch(() => undefined);
      }
      await sleep(100);
    }
    const tail = await readLogTail(logFile);
    if (running()) {
      child?.kill("SIGKILL");
      await exited;
    }
    const inUse = /could not bind|Address already in use/i.test(tail);
    throw Object.assign(
      new PostgresStartError(`PostgreSQL on port ${port} did not come up (${last}):\n${tail}`),
      { inUse },
    );
  };

  const shutdown = async (signal: NodeJS.Signals) => {
    if (!running()) return;
    child?.kill(signal);
    const inTime = await Promise.race([exited.then(() => true), sleep(10_000, false, { ref: false })]);
    if (!inTime) child?.kill("SIGKILL");
    await exited;
  };

  try {
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    if (user !== undefined) {
      chownSync(dir, user.uid, user.gid);
      chownSync(passwordFile, user.uid, user.gid);
    }
    const init = command(
      join(bin, "initdb"),
      [
        "-D",
        dataDir,
        "-U",
        superuser,
        "--auth=scram-sha-256",
        `--pwfile=${passwordFile}`,
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
      ],
      user,
    );
    const r = spawnSync(init.command, init.args, { encoding: "utf8", timeout: 60_000 });
    if (r.status !== 0) throw new PostgresStartError(`initdb failed (${r.status}): ${r.stderr || r.stdout}`);
    for (let attempt = 1; ; attempt++) {
      port = await getFreePort();
      try {
        await spawnServer();
        break;
      } catch (e) {
        if (!(e as { inUse?: boolean }).inUse || attempt >= 3) throw e;
      }
    }
  } catch (e) {
    await shutdown("SIGKILL");
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    untrackTempDir(dir);
    throw e;
  }

  const server: PostgresServer = {
    host: LOOPBACK_HOST,
    get port() {
      return port;
    },
    user: superuser,
    password,
    database: "postgres",
    passwordFile,
    get url() {
      return `postgres://${encodeURIComponent(superuser)}:${encodeURIComponent(password)}@${LOOPBACK_HOST}:${port}/postgres`;
    },
    get running() {
      return running();
    },
    async connect() {
      const client = new pg.Client({
        host: LOOPBACK_HOST,
        port,
        user: superuser,
        password,
        database: "postgres",
      });
      client.on("error", () => undefined);
      await client.connect();
      return client;
    },
    async restart() {
      await shutdown("SIGINT");
      await spawnServer();
    },
    stopServer: () => shutdown("SIGINT"),
    async start() {
      if (!running()) await spawnServer();
    },
    async kill() {
      if (!running()) return;
      child?.kill("SIGKILL");
      await exited;
    },
    stop() {
      stopping ??= (async () => {
        await shutdown("SIGINT");
        await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        untrackTempDir(dir);
      })();
      return stopping;
    },
  };
  return server;
}
