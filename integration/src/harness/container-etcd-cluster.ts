import type { StartedTestContainer } from "testcontainers";
import { EtcdMemberStateError, EtcdStartError, EtcdUnsupportedError } from "./errors.js";
import type { EtcdCluster, ResolvedEtcdClusterOptions } from "./etcd-cluster.js";
import { pollUntilHealthy } from "./etcd-health.js";
import { DEFAULT_HEALTH_TIMEOUT_MS, type EtcdMember, type WaitHealthyOptions } from "./etcd-member.js";
import { getFreePorts } from "./free-port.js";

/** Official etcd image used by the `testcontainers` provider. */
export const ETCD_IMAGE = "gcr.io/etcd-development/etcd:v3.5.17";

const CLIENT_PORT = 2379;
const PEER_PORT = 2380;
const STOP_GRACE_MS = 3_000;

/**
 * Starts a single-member etcd in a Docker container via testcontainers.
 *
 * Host ports are picked by us and bound explicitly rather than left to Docker, so
 * they survive `restart()` and `cluster.endpoints` stays valid. Containers that a
 * dying test process leaves behind are removed by testcontainers' reaper (Ryuk).
 */
export async function startContainerEtcdCluster(options: ResolvedEtcdClusterOptions): Promise<EtcdCluster> {
  if (options.hosts !== undefined) {
    throw new EtcdUnsupportedError(
      'the testcontainers provider cannot place members on hosts; use provider "binary"',
    );
  }
  if (options.size !== 1) {
    throw new EtcdUnsupportedError(
      `the testcontainers provider runs 1-member clusters only (asked for ${options.size}); use provider "binary"`,
    );
  }
  // Loaded lazily: it pulls in dockerode and friends, which binary-provider runs never need.
  const { GenericContainer, Wait } = await import("testcontainers");
  const [clientHostPort, peerHostPort] = await getFreePorts(2);
  if (clientHostPort === undefined || peerHostPort === undefined) throw new Error("unreachable: no ports");
  const name = `${options.name}-0`;
  const startPromise = new GenericContainer(ETCD_IMAGE)
    .withExposedPorts(
      { container: CLIENT_PORT, host: clientHostPort },
      { container: PEER_PORT, host: peerHostPort },
    )
    .withCommand([
      "/usr/local/bin/etcd",
      "--name",
      name,
      "--data-dir",
      "/etcd-data",
      "--listen-client-urls",
      `http://0.0.0.0:${CLIENT_PORT}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${clientHostPort}`,
      "--listen-peer-urls",
      `http://0.0.0.0:${PEER_PORT}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${PEER_PORT}`,
      "--initial-cluster",
      `${name}=http://127.0.0.1:${PEER_PORT}`,
      "--initial-cluster-state",
      "new",
      "--heartbeat-interval",
      "50",
      "--election-timeout",
      "500",
      ...options.extraArgs,
    ])
    .withWaitStrategy(
      Wait.forHttp("/health", CLIENT_PORT).forResponsePredicate((body) => body.includes('"health":"true"')),
    )
    .withStartupTimeout(options.startTimeoutMs)
    .start();
  const container = await raceAbort(startPromise, options.signal);
  const host = container.getHost();
  const member = new ContainerEtcdMember(
    name,
    `http://${host}:${clientHostPort}`,
    `http://${host}:${peerHostPort}`,
    container,
  );
  return new ContainerEtcdCluster(member);
}

/** Rejects with the abort reason on abort, but still disposes the container if it starts later. */
async function raceAbort(
  start: Promise<StartedTestContainer>,
  signal: AbortSignal | undefined,
): Promise<StartedTestContainer> {
  if (signal === undefined) return start;
  signal.throwIfAborted();
  let onAbort = (): void => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
  });
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await Promise.race([start, aborted]);
  } catch (error) {
    start
      .then(
        (late) => late.stop({ remove: true }),
        () => undefined,
      )
      .catch(() => undefined);
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

class ContainerEtcdMember implements EtcdMember {
  readonly pid = undefined;
  readonly paused = false;
  readonly #container: StartedTestContainer;
  #running = true;

  constructor(
    readonly name: string,
    readonly clientUrl: string,
    readonly peerUrl: string,
    container: StartedTestContainer,
  ) {
    this.#container = container;
  }

  get running(): boolean {
    return this.#running;
  }

  async kill(): Promise<void> {
    await this.#stopContainer(0);
  }

  async stop(): Promise<void> {
    await this.#stopContainer(STOP_GRACE_MS);
  }

  pause(): void {
    // `docker pause` is asynchronous; a synchronous pause() that returns before the
    // freeze takes effect would make drills flaky, so refuse rather than pretend.
    throw new EtcdUnsupportedError("pause() is not supported by the testcontainers provider");
  }

  resume(): void {
    // Never paused, so there is nothing to resume.
  }

  async restart(options?: WaitHealthyOptions): Promise<void> {
    await this.#container.restart({ timeout: STOP_GRACE_MS });
    this.#running = true;
    await this.waitHealthy(options);
  }

  async waitHealthy(options: WaitHealthyOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
    await pollUntilHealthy(
      {
        clientUrl: this.clientUrl,
        checkAlive: async () =>
          this.#running ? undefined : new EtcdMemberStateError(this.name, "container is stopped"),
        onTimeout: async (lastProbe) =>
          new EtcdStartError(this.name, `not healthy after ${timeoutMs} ms (last probe: ${lastProbe})`, ""),
      },
      timeoutMs,
      options.signal,
    );
  }

  /** Stops and removes the container for good. */
  async dispose(): Promise<void> {
    this.#running = false;
    await this.#container.stop({ remove: true, removeVolumes: true, timeout: 0 });
  }

  async #stopContainer(timeoutMs: number): Promise<void> {
    if (!this.#running) return;
    // Not StartedTestContainer.stop(): it memoizes its first result, so a later
    // dispose() could no longer remove the container.
    const { getContainerRuntimeClient } = await import("testcontainers");
    const client = await getContainerRuntimeClient();
    await client.container.stop(client.container.getById(this.#container.getId()), { timeout: timeoutMs });
    this.#running = false;
  }
}

class ContainerEtcdCluster implements EtcdCluster {
  readonly provider = "testcontainers";
  readonly endpoints: string[];
  readonly #member: ContainerEtcdMember;
  #stopping: Promise<void> | undefined;

  constructor(member: ContainerEtcdMember) {
    this.#member = member;
    this.endpoints = [member.clientUrl];
  }

  get members(): EtcdMember[] {
    return [this.#member];
  }

  async waitHealthy(options?: WaitHealthyOptions): Promise<void> {
    if (this.#member.running) await this.#member.waitHealthy(options);
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#member.dispose();
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
