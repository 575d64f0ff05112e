import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { BinaryEtcdMember } from "./binary-etcd-member.js";
import { EtcdPortInUseError } from "./errors.js";
import type { EtcdCluster, ResolvedEtcdClusterOptions } from "./etcd-cluster.js";
import type { EtcdMember, WaitHealthyOptions } from "./etcd-member.js";
import { fetchMemberStatus } from "./etcd-status.js";
import { getFreePorts, LOOPBACK_HOST } from "./free-port.js";
import { sweepOrphanedTempDirs, tempDirPrefix, trackTempDir, untrackTempDir } from "./process-registry.js";

/** Ports of a member that runs on a host of its own. */
const HOST_CLIENT_PORT = 2379;
const HOST_PEER_PORT = 2380;

/** Port races are rare; three fresh sets of ports in a row colliding means something else is wrong. */
const MAX_START_ATTEMPTS = 3;

/**
 * Starts `options.size` local etcd processes on free loopback ports, each with a fresh
 * temp dir, and waits until all are healthy. Retries with new ports when a member
 * loses the race for one of its ports.
 */
export async function startBinaryEtcdCluster(options: ResolvedEtcdClusterOptions): Promise<EtcdCluster> {
  sweepOrphanedTempDirs();
  for (let attempt = 1; ; attempt++) {
    try {
      return await BinaryEtcdCluster.start(options);
    } catch (error) {
      if (!(error instanceof EtcdPortInUseError) || attempt >= MAX_START_ATTEMPTS) throw error;
    }
  }
}

class BinaryEtcdCluster implements EtcdCluster {
  readonly provider = "binary";
  readonly endpoints: string[];
  readonly #members: readonly BinaryEtcdMember[];
  readonly #tempDirs: readonly string[];
  #stopping: Promise<void> | undefined;

  private constructor(members: readonly BinaryEtcdMember[], tempDirs: readonly string[]) {
    this.#members = members;
    this.#tempDirs = tempDirs;
    this.endpoints = members.map((member) => member.clientUrl);
  }

  /** One start attempt; on any failure everything it created is torn down before rethrowing. */
  static async start(options: ResolvedEtcdClusterOptions): Promise<BinaryEtcdCluster> {
    // A member on a host of its own has the host's ports to itself: etcd's usual ones.
    const ports = options.hosts === undefined ? await getFreePorts(options.size * 2) : [];
    // The token keeps members of different test clusters from ever talking to each
    // other should a port be reused while an old member still retries its peers.
    const token = `${options.name}-${randomUUID()}`;
    const specs = Array.from({ length: options.size }, (_, index) => {
      const host = options.hosts?.[index];
      return {
        name: `${options.name}-${index}`,
        clientUrl: `http://${host?.address ?? LOOPBACK_HOST}:${ports[index * 2] ?? HOST_CLIENT_PORT}`,
        peerUrl: `http://${host?.address ?? LOOPBACK_HOST}:${ports[index * 2 + 1] ?? HOST_PEER_PORT}`,
        host,
      };
    });
    const initialCluster = specs.map((spec) => `${spec.name}=${spec.peerUrl}`).join(",");
    const logDir = options.logDir === undefined ? undefined : resolve(options.logDir);

    const members: BinaryEtcdMember[] = [];
    const tempDirs: string[] = [];
    try {
      if (logDir !== undefined) await mkdir(logDir, { recursive: true });
      for (const spec of specs) {
        const dir = await mkdtemp(tempDirPrefix(spec.name));
        trackTempDir(dir);
        tempDirs.push(dir);
        members.push(
          BinaryEtcdMember.spawn({
            ...spec,
            dataDir: join(dir, "data"),
            logFile:
              logDir === undefined
                ? join(dir, "etcd.log")
                : join(logDir, `${spec.name}.${token.slice(-8)}.log`),
            initialCluster,
            initialClusterToken: token,
            extraArgs: options.extraArgs,
          }),
        );
      }
      await waitAllHealthy(members, { timeoutMs: options.startTimeoutMs, signal: options.signal });
      return new BinaryEtcdCluster(members, tempDirs);
    } catch (error) {
      // A cluster that never came up has nothing to shut down gracefully, and etcd
      // can sit on SIGTERM for seconds mid-bootstrap.
      await stopAndRemove(members, tempDirs, false);
      throw error;
    }
  }

  get members(): EtcdMember[] {
    return [...this.#members];
  }

  waitHealthy(options?: WaitHealthyOptions): Promise<void> {
    return waitAllHealthy(
      this.#members.filter((member) => member.running),
      options,
    );
  }

  stop(): Promise<void> {
    this.#stopping ??= stopAndRemove(this.#members, this.#tempDirs, true);
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

async function waitAllHealthy(
  members: readonly BinaryEtcdMember[],
  options: WaitHealthyOptions = {},
): Promise<void> {
  // The first failure (e.g. a member that died) cancels the other waits, so the
  // caller gets that member's error instead of waiting out everyone's timeout.
  const failFast = new AbortController();
  const signal =
    options.signal === undefined ? failFast.signal : AbortSignal.any([options.signal, failFast.signal]);
  try {
    await Promise.all(
      members.map((member) =>
        member.waitHealthy({ ...options, signal }).catch((error: unknown) => {
          failFast.abort(error);
          throw error;
        }),
      ),
    );
  } finally {
    failFast.abort();
  }
}

async function stopAndRemove(
  members: readonly BinaryEtcdMember[],
  tempDirs: readonly string[],
  graceful: boolean,
): Promise<void> {
  if (graceful) {
    for (const member of await inShutdownOrder(members)) await member.retire(true);
  }
  // Kills whatever is left; also marks members that were not running as retired.
  await Promise.all(members.map((member) => member.retire(false)));
  await Promise.all(
    tempDirs.map(async (dir) => {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      untrackTempDir(dir);
    }),
  );
}

/**
 * Orders running members so that believed leaders stop last, one at a time.
 *
 * On SIGTERM an etcd leader first hands leadership to the peer it believes is
 * most connected and waits (up to its ~6 s request timeout) for that to finish.
 * Stopped all at once, or with the leader early, that peer may be exiting or
 * frozen and the leader sits out the wait until our SIGKILL. Followers stopping
 * first close their peer connections, so the leader finds no live peer and exits
 * at once; each member then takes ~50 ms. Paused members are resumed first: the
 * status probe needs them to answer, and SIGTERM waits for SIGCONT anyway.
 */
async function inShutdownOrder(members: readonly BinaryEtcdMember[]): Promise<BinaryEtcdMember[]> {
  const running = members.filter((member) => member.running);
  for (const member of running) member.resume();
  const statuses = await Promise.all(running.map((member) => fetchMemberStatus(member.clientUrl)));
  const leaderIds = new Set(statuses.map((status) => status?.leaderId).filter((id) => id !== undefined));
  const isLeader = (index: number): boolean => {
    const memberId = statuses[index]?.memberId;
    return memberId !== undefined && leaderIds.has(memberId);
  };
  const order = running.map((member, index) => ({ member, last: isLeader(index) }));
  return [...order.filter((entry) => !entry.last), ...order.filter((entry) => entry.last)].map(
    (entry) => entry.member,
  );
}
