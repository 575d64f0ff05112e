/** Options for waiting until a member reports healthy. */
export interface WaitHealthyOptions {
  /** Give up after this long; defaults to 15 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * One etcd member of a test cluster, with the fault-injection knobs drills need.
 *
 * Lifecycle operations are idempotent where that is unambiguous: `kill()`/`stop()`
 * on a member that is not running resolve immediately, `resume()` on a member that
 * is not paused does nothing.
 */
export interface EtcdMember {
  /** etcd `--name`, unique within the cluster. */
  readonly name: string;
  /** Client URL, e.g. `http://127.0.0.1:40123`; stable across restarts. */
  readonly clientUrl: string;
  /** Peer URL, e.g. `http://127.0.0.1:40124`; stable across restarts. */
  readonly peerUrl: string;
  /** OS pid of the running etcd, or `undefined` when not running or not a local process. */
  readonly pid: number | undefined;
  /** True while the member's process (or container) exists, paused or not. */
  readonly running: boolean;
  /** True between `pause()` and `resume()`. */
  readonly paused: boolean;
  /** Crash the member (SIGKILL) and wait until it is gone. Data dir is kept. */
  kill(): Promise<void>;
  /** Graceful shutdown (SIGTERM, SIGKILL after 3 s) and wait until it is gone. Data dir is kept. */
  stop(): Promise<void>;
  /** Freeze the member (SIGSTOP): it keeps its sockets but answers nothing, like a GC pause or a hung VM. */
  pause(): void;
  /** Unfreeze a paused member (SIGCONT). */
  resume(): void;
  /**
   * Start the member again with the same name, ports and data dir (stopping it first
   * if it is running) and wait until it is healthy. The existing data dir makes etcd
   * rejoin as the same member; `--initial-cluster*` flags are then ignored.
   */
  restart(options?: WaitHealthyOptions): Promise<void>;
  /** Wait until `GET /health` on this member reports healthy. */
  waitHealthy(options?: WaitHealthyOptions): Promise<void>;
}

/** Default for {@link WaitHealthyOptions.timeoutMs}. */
export const DEFAULT_HEALTH_TIMEOUT_MS = 15_000;
