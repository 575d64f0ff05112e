import { get } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

/** Outcome of one `GET /health` against an etcd member. */
export interface HealthProbe {
  readonly healthy: boolean;
  /** Response body or connection error, for error messages. */
  readonly detail: string;
}

const PROBE_TIMEOUT_MS = 1_000;
const POLL_INTERVAL_MS = 100;

/**
 * Asks one etcd member whether it is healthy. A member reports healthy only when the
 * cluster has a leader and it can serve a quorum read, so this doubles as "the
 * cluster has quorum from this member's point of view".
 *
 * Never rejects: a hung (e.g. SIGSTOPped) member yields an unhealthy probe after a
 * short timeout.
 */
export function probeHealth(clientUrl: string, signal?: AbortSignal): Promise<HealthProbe> {
  return new Promise((resolve) => {
    // `agent: false` gives every probe its own connection that is closed afterwards,
    // so no pooled keep-alive socket to a member outlives the member or the test.
    const request = get(
      new URL("/health", clientUrl),
      { agent: false, timeout: PROBE_TIMEOUT_MS, signal },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve({ healthy: isHealthyBody(body), detail: body.trim() }));
        response.on("error", (error) => resolve({ healthy: false, detail: error.message }));
      },
    );
    request.on("timeout", () => request.destroy(new Error(`no response within ${PROBE_TIMEOUT_MS} ms`)));
    request.on("error", (error) => resolve({ healthy: false, detail: error.message }));
  });
}

/** What {@link pollUntilHealthy} needs to know about the member it waits for. */
export interface PollTarget {
  readonly clientUrl: string;
  /** Returns an error to stop waiting early, e.g. because the process exited. */
  readonly checkAlive: () => Promise<Error | undefined>;
  /** Builds the error thrown when the deadline passes. */
  readonly onTimeout: (lastProbe: string) => Promise<Error>;
}

/**
 * Polls `/health` until it reports healthy, the target reports itself dead, the
 * timeout passes or `signal` aborts (rejecting with the signal's reason).
 */
export async function pollUntilHealthy(
  target: PollTarget,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastProbe = "not probed yet";
  for (;;) {
    signal?.throwIfAborted();
    const probe = await probeHealth(target.clientUrl, signal);
    if (probe.healthy) return;
    lastProbe = probe.detail;
    const death = await target.checkAlive();
    if (death !== undefined) throw death;
    if (Date.now() >= deadline) throw await target.onTimeout(lastProbe);
    await sleep(POLL_INTERVAL_MS, undefined, { signal }).catch((error: unknown) => {
      // Surface the caller's abort reason rather than the timer's generic AbortError.
      signal?.throwIfAborted();
      throw error;
    });
  }
}

function isHealthyBody(body: string): boolean {
  try {
    const parsed: unknown = JSON.parse(body);
    return (
      typeof parsed === "object" && parsed !== null && (parsed as { health?: unknown }).health === "true"
    );
  } catch {
    return false;
  }
}
