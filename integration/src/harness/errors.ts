/**
 * Base class of every error the harness throws, so a test can tell a harness
 * failure (broken environment) from a failure of the code under test.
 */
export class HarnessError extends Error {
  override readonly name: string = "HarnessError";
}

/** An option or environment variable has a value the harness cannot act on. */
export class HarnessConfigError extends HarnessError {
  override readonly name: string = "HarnessConfigError";
}

/** The selected provider cannot do what was asked (e.g. a 3-member cluster in Docker). */
export class EtcdUnsupportedError extends HarnessError {
  override readonly name: string = "EtcdUnsupportedError";
}

/** An operation needs a member in a state it is not in (e.g. pausing a killed member). */
export class EtcdMemberStateError extends HarnessError {
  override readonly name: string = "EtcdMemberStateError";
  constructor(
    readonly memberName: string,
    message: string,
  ) {
    super(`etcd member ${memberName}: ${message}`);
  }
}

/** An etcd member process exited, or could not be spawned, before it became healthy. */
export class EtcdStartError extends HarnessError {
  override readonly name: string = "EtcdStartError";
  constructor(
    readonly memberName: string,
    message: string,
    /** Last lines of the member's combined stdout/stderr log. */
    readonly logTail: string,
    options?: ErrorOptions,
  ) {
    super(formatWithLog(`etcd member ${memberName} ${message}`, logTail), options);
  }
}

/**
 * A member could not bind one of its ports. Ports are allocated by binding port 0
 * and releasing it, so another process can grab one in between; the cluster start
 * retries with fresh ports when it sees this.
 */
export class EtcdPortInUseError extends EtcdStartError {
  override readonly name: string = "EtcdPortInUseError";
}

/** A member stayed unhealthy (or unreachable) for longer than the allowed time. */
export class EtcdHealthTimeoutError extends HarnessError {
  override readonly name: string = "EtcdHealthTimeoutError";
  constructor(
    readonly memberName: string,
    readonly timeoutMs: number,
    /** What the last `/health` probe saw, e.g. a response body or a connection error. */
    readonly lastProbe: string,
    readonly logTail: string,
  ) {
    super(
      formatWithLog(
        `etcd member ${memberName} not healthy after ${timeoutMs} ms (last probe: ${lastProbe})`,
        logTail,
      ),
    );
  }
}

function formatWithLog(message: string, logTail: string): string {
  return logTail.length > 0 ? `${message}\n--- log tail ---\n${logTail}` : message;
}

/**
 * An `ip` or `iptables` command of the network harness failed (or the tool is missing:
 * the virtual network needs root, iproute2 and iptables; scripts/setup.sh installs them).
 */
export class NetworkCommandError extends HarnessError {
  override readonly name: string = "NetworkCommandError";
  constructor(
    /** The command line that failed, e.g. `ip netns add shn-123-0-br`. */
    readonly commandLine: string,
    /** Its exit code, or null when it could not be run or was killed. */
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: ErrorOptions,
  ) {
    super(`${commandLine} failed (exit ${String(exitCode)}): ${stderr.trim() || "no output"}`, options);
  }
}
