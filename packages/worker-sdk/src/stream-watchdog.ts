import { StreamAbort } from "./stream-failure.js";

/** What the watchdog needs of its stream. */
export interface WatchdogHost {
  /** The replica, for log lines. */
  readonly target: string;
  /** The Hello carried a session token: a resume is answered quickly (no etcd write). */
  readonly resuming: boolean;
  /** When the Hello was sent (monotonic ms). */
  readonly startedAt: number;
  /** The heartbeat interval in force, in ms. */
  intervalMs(): number;
  probeTimeoutMs(): number;
  /** Whether the replica answers an HTTP/2 PING within `timeoutMs` (never rejects). */
  probe(timeoutMs: number): Promise<boolean>;
  /** Ends the stream for `reason`. */
  abort(reason: StreamAbort): void;
  log(entry: Record<string, unknown>): void;
}

/** A first join writes to etcd: give it this long before checking that the replica answers at all. */
const firstJoinProbeAfterMs = 1000;
const checkEveryMs = 50;

/**
 * Idle detection for one HeartbeatStream (the third liveness layer of DESIGN.md, on the
 * worker's side). A paused or wedged replica keeps its TCP connections open, so silence is
 * the only symptom; the self-fence is ticking meanwhile, so the stream must be given up in
 * time to find the next leader:
 *
 * - no heartbeat ack for 1.25 intervals (an ack is overdue): check the replica with an HTTP/2
 *   PING on a connection of its own; no answer within the probe timeout ends the stream
 *   (`UNRESPONSIVE`), unless the stream heard from the replica meanwhile;
 * - no heartbeat ack for 3 intervals ends it whatever the PING said (`NO_ACK`);
 * - before the Welcome: a resume is answered quickly, so no Welcome within 2 intervals
 *   (at least 500 ms) ends it (`NO_WELCOME`), and half an interval without one triggers the
 *   PING check; a first join (etcd writes) is only checked with a PING after 1 s.
 *
 * When the checks themselves ran late (this process was paused or starved), the silence is
 * ours, not the replica's: it gets the benefit of the doubt and is checked with a PING first.
 */
export class StreamWatchdog {
  readonly #host: WatchdogHost;
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;
  #welcomedAt: number | undefined;
  #lastHeardAt: number;
  #lastCheckAt: number;
  #probing = false;
  /** A PING check already answered since the last ack: do not check again until one arrives. */
  #checked = false;
  #closed = false;

  constructor(host: WatchdogHost, now: () => number = () => performance.now()) {
    this.#host = host;
    this.#now = now;
    this.#lastHeardAt = host.startedAt;
    this.#lastCheckAt = now();
    this.#timer = setInterval(() => this.check(), checkEveryMs);
  }

  welcomed(now: number): void {
    this.#welcomedAt = now;
    this.heard(now);
  }

  acked(now: number): void {
    this.heard(now);
  }

  heard(now: number): void {
    if (now > this.#lastHeardAt) this.#lastHeardAt = now;
    this.#checked = false;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
  }

  /** Runs the rules once (the timer calls it every 50 ms). */
  check(): void {
    if (this.#closed) return;
    const host = this.#host;
    const now = this.#now();
    const interval = host.intervalMs();
    if (now - this.#lastCheckAt > Math.max(4 * checkEveryMs, interval)) {
      // Our own timers were late: do not blame the replica for the silence we slept through.
      this.#lastHeardAt = Math.max(this.#lastHeardAt, now - 2 * interval);
      this.#checked = false;
    }
    this.#lastCheckAt = now;
    const silentMs = now - this.#lastHeardAt;
    if (this.#welcomedAt === undefined) {
      if (host.resuming && silentMs > Math.max(500, 2 * interval)) {
        this.#end(
          new StreamAbort("NO_WELCOME", `no Welcome from ${host.target} within ${Math.round(silentMs)} ms`),
        );
        return;
      }
      if (silentMs > (host.resuming ? interval / 2 : firstJoinProbeAfterMs))
        this.#probe(`no Welcome within ${Math.round(silentMs)} ms`);
      return;
    }
    if (silentMs > 3 * interval) {
      host.log({ event: "no_ack", coordinator: host.target, silentMs: Math.round(silentMs) });
      this.#end(new StreamAbort("NO_ACK", `no heartbeat ack for ${Math.round(silentMs)} ms (3 intervals)`));
      return;
    }
    if (silentMs > 1.25 * interval) this.#probe(`no heartbeat ack for ${Math.round(silentMs)} ms`);
  }

  #probe(symptom: string): void {
    if (this.#probing || this.#checked) return;
    this.#probing = true;
    const timeoutMs = this.#host.probeTimeoutMs();
    const heardBefore = this.#lastHeardAt;
    void this.#host.probe(timeoutMs).then((ok) => {
      this.#probing = false;
      if (this.#closed) return;
      // The stream itself answered while the PING was out (a slow replica, not a dead one).
      if (this.#lastHeardAt > heardBefore) return;
      if (ok) {
        this.#checked = true;
        return;
      }
      this.#host.log({
        event: "no_answer",
        coordinator: this.#host.target,
        symptom,
        probeTimeoutMs: timeoutMs,
      });
      this.#end(
        new StreamAbort("UNRESPONSIVE", `${symptom}, and no answer to an HTTP/2 PING within ${timeoutMs} ms`),
      );
    });
  }

  #end(reason: StreamAbort): void {
    this.close();
    this.#host.abort(reason);
  }
}
