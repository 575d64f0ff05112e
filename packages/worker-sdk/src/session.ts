import type { Client } from "@connectrpc/connect";
import type { ShardService } from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { CoordinatorClients } from "./coordinator-clients.js";
import { WorkerError } from "./errors.js";
import { ReplicaPicker } from "./replica-picker.js";
import { probeReplica } from "./replica-probe.js";
import { SessionProtocol } from "./session-protocol.js";
import type { Outbound, SessionPort, SessionRunner } from "./session-runner.js";
import type { ShardLocation } from "./shard-location.js";
import { sleep } from "./sleep.js";
import { StreamAttempt } from "./stream-attempt.js";
import { classifyStreamError, type StreamFailure } from "./stream-failure.js";
import { diagnoseTlsMismatch } from "./tls-diagnosis.js";
import type { EventHub } from "./worker-event.js";
import type { ResolvedWorkerOptions } from "./worker-options.js";

export type { HeartbeatLoad, Outbound, SessionPort, SessionRunner, WelcomeInfo } from "./session-runner.js";

/**
 * The worker's session with the leading coordinator: one HeartbeatStream at a time, following
 * redirects, reconnecting with full-jitter backoff, avoiding replicas that stopped answering,
 * and giving up at once on refusals retrying cannot fix. What the leader's messages mean (leader
 * order, the fence, incarnations, the runners) is the {@link SessionProtocol}'s; one stream's
 * mechanics (numbering, heartbeats, idle detection) are a {@link StreamAttempt}'s. The session
 * knows nothing about shards or tasks.
 */
export class Session implements SessionPort {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #onFatal: (e: WorkerError) => void;
  /** Replicas whose dropped connection was checked for a TLS mismatch. */
  readonly #diagnosed = new Set<string>();
  readonly #protocol: SessionProtocol;
  readonly #picker: ReplicaPicker;
  readonly #closing = new AbortController();
  readonly #clients: CoordinatorClients;
  #stream: StreamAttempt | undefined;
  #tick: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #welcomed: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** Leave was sent: the stream that carried it is the last one. */
  #left = false;
  #connectedTo: string | undefined;
  #streamDone: (() => void) | undefined;
  /** Attempts since the last Welcome (the backoff's exponent). */
  #attempt = 0;
  /** The current stream was welcomed. */
  #streamWelcomed = false;

  /** `onFatal` is called with an error retrying cannot fix; the owner then closes everything. */
  constructor(o: ResolvedWorkerOptions, hub: EventHub, onFatal: (e: WorkerError) => void) {
    this.#o = o;
    this.#hub = hub;
    this.#onFatal = onFatal;
    this.#clients = new CoordinatorClients(o.pingIntervalMs, o.security, o.compression);
    this.#protocol = new SessionProtocol(
      o,
      hub,
      {
        welcomed: (target) => {
          this.#connectedTo = target;
          this.#streamWelcomed = true;
          this.#attempt = 0;
          this.#picker.welcomed();
          this.#welcomed?.resolve();
        },
        // A replica that stopped answering is avoided for 2 intervals: long enough for
        // followers to stop naming a paused leader in most failovers, short enough to come back
        // to a leader that was only slow before our fence runs out.
        intervalChanged: (ms) => {
          this.#picker.recheckMs = 2 * ms;
        },
      },
      this,
    );
    this.#picker = new ReplicaPicker(o.coordinators, 2 * this.#protocol.intervalMs);
  }

  /** Adds a runner; call before {@link start}. */
  attach(runner: SessionRunner): void {
    this.#protocol.attach(runner);
  }

  /** Starts the connection loop; resolves on the first Welcome, rejects on a fatal refusal or timeout. */
  async start(): Promise<void> {
    const { connectTimeoutMs } = this.#o;
    this.#protocol.start();
    const first = new Promise<void>((resolve, reject) => {
      this.#welcomed = { resolve, reject };
    });
    this.#tick = setInterval(() => this.tick(), 50);
    this.#loop = this.#connectLoop();
    const timer = setTimeout(() => {
      const causes = this.#picker.causes();
      this.#welcomed?.reject(
        new WorkerError(
          "unavailable",
          `no coordinator welcomed us within ${connectTimeoutMs} ms (${causes === "" ? "no attempt finished" : causes})`,
        ),
      );
    }, connectTimeoutMs);
    try {
      await first;
    } finally {
      clearTimeout(timer);
      this.#welcomed = undefined;
    }
  }

  /** The replica (host:port) of the current stream; undefined while reconnecting. */
  get coordinator(): string | undefined {
    return this.#connectedTo;
  }

  get leaderEpoch(): number {
    return this.#protocol.leaderEpoch;
  }

  get incarnation(): number {
    return this.#protocol.incarnation;
  }

  /** The replica the session talks to (or is about to). */
  get target(): string {
    return this.#picker.target;
  }

  /** The client for data calls (the worker's compression) to `target`. */
  dataClient(target: string): Client<typeof ShardService> {
    return this.#clients.dataClient(target);
  }

  /** See {@link SessionProtocol.shardLocation}. */
  shardLocation(shard: number, version: number): ShardLocation | undefined {
    return this.#protocol.shardLocation(shard, version);
  }

  get sessionToken(): string {
    return this.#protocol.token;
  }

  /** Whether the self-fence still holds at `now`. */
  valid(now: number): boolean {
    return this.#protocol.valid(now);
  }

  /** No runner is confirmed again from now on (the worker is closing). */
  retire(): void {
    this.#protocol.retire();
  }

  /** Checks the fence now (runners are told `fenced` the moment it ran out), then ticks the runners. */
  tick(): void {
    this.#protocol.tick(performance.now());
  }

  send(kind: Outbound): void {
    this.#stream?.send(kind);
  }

  /**
   * Sends Leave on an open stream and waits (at most 1 s) for the leader to end it cleanly.
   * `restart`: a planned restart; the leader keeps the membership for its restart grace.
   */
  async leave(reason: string, restart: boolean): Promise<void> {
    if (this.#stream?.open !== true) return;
    this.#left = true;
    this.send({ case: "leave", value: { reason, restart } });
    await Promise.race([this.#loopIdle(), sleep(1000, undefined).catch(() => undefined)]);
  }

  /** Ends the loop, the stream, every connection and timer. */
  async close(): Promise<void> {
    this.#closing.abort(new WorkerError("closed", "worker closed"));
    clearInterval(this.#tick);
    this.#protocol.close();
    await this.#loop?.catch(() => undefined);
    this.#clients.close();
  }

  /** A client on `target` (one HTTP/2 connection per replica, kept for the session's life). */
  client(target: string): Client<typeof ShardService> {
    return this.#clients.client(target);
  }

  // ---- the connection loop -------------------------------------------------------------

  /**
   * How long a replica gets to answer an HTTP/2 PING (on a fresh connection) before it counts
   * as not answering: 3/4 of an interval, so a silent leader is given up within about 2
   * intervals of its last ack, while a merely busy one has time to answer.
   */
  #probeTimeoutMs(): number {
    return Math.min(2000, Math.max(200, 0.75 * this.#protocol.intervalMs));
  }

  #loopIdle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#stream === undefined) resolve();
      else this.#streamDone = resolve;
    });
  }

  /** Waits before the next attempt: the configured backoff, or at most half an interval while the fence holds. */
  async #pause(): Promise<void> {
    const { backoff } = this.#o;
    // While the fence still holds, our work keeps running only if we find the leader in time.
    const hurry = this.#protocol.everWelcomed && this.#protocol.valid(performance.now());
    const capMs = hurry ? Math.min(backoff.capMs, this.#protocol.intervalMs / 2) : backoff.capMs;
    await sleep(backoffDelay(this.#attempt, { ...backoff, capMs }), this.#closing.signal).catch(
      () => undefined,
    );
    this.#attempt += 1;
  }

  async #connectLoop(): Promise<void> {
    const signal = this.#closing.signal;
    while (!signal.aborted) {
      const target = this.#picker.target;
      if (this.#picker.isSuspect(target)) {
        // It failed to answer us before: check that it answers at all before waiting on it.
        const probeMs = this.#probeTimeoutMs();
        if (await probeReplica(target, probeMs, signal, this.#o.security)) this.#picker.answered(target);
        else {
          if (signal.aborted) break;
          const message = `no answer to an HTTP/2 PING within ${probeMs} ms`;
          this.#hub.log({ event: "replica_unresponsive", coordinator: target, message });
          const step = this.#picker.failed(
            { cause: `UNRESPONSIVE: ${message}`, leader: undefined, unresponsive: true },
            performance.now(),
          );
          if (step.backoff) await this.#pause();
          continue;
        }
      }
      this.#streamWelcomed = false;
      let failure: StreamFailure;
      try {
        await this.#runStream(target);
        failure = {
          code: "OK",
          message: "stream ended",
          leader: undefined,
          fatal: undefined,
          unresponsive: false,
        };
      } catch (e) {
        if (signal.aborted) break;
        failure = classifyStreamError(e);
        // A connection dropped before any answer may be a TLS mismatch that looks like a
        // reset (see tls-diagnosis.ts): check once per replica, before the first Welcome.
        if (
          failure.fatal === undefined &&
          failure.leader === undefined &&
          !this.#protocol.everWelcomed &&
          (failure.code === "CANCELED" || failure.code === "UNAVAILABLE") &&
          !this.#diagnosed.has(target)
        ) {
          this.#diagnosed.add(target);
          const tls = await diagnoseTlsMismatch(target, this.#o.security);
          if (signal.aborted) break;
          if (tls !== undefined)
            failure = { ...failure, code: "TLS_FAILED", message: tls, fatal: "tls_failed" };
        }
      }
      if (signal.aborted || this.#left) break; // after Leave: never join again
      this.#reportEnd(target, failure, this.#streamWelcomed);
      // A refusal retrying cannot fix ends the worker; but once we were welcomed, one replica
      // that is not a coordinator (a bad address in the list) is only avoided.
      if (
        failure.fatal !== undefined &&
        !(this.#protocol.everWelcomed && failure.fatal === "not_coordinator")
      ) {
        const e = new WorkerError(failure.fatal, `${target}: ${failure.message}`);
        this.#welcomed?.reject(e);
        this.#onFatal(e);
        break;
      }
      const unresponsive = failure.unresponsive || failure.fatal !== undefined;
      // Its connection may be the wedged part: the next attempt there opens a fresh one.
      if (unresponsive) this.#clients.reset(target);
      const step = this.#picker.failed(
        { cause: `${failure.code}: ${failure.message}`, leader: failure.leader, unresponsive },
        performance.now(),
      );
      if (step.backoff) await this.#pause();
    }
  }

  #reportEnd(target: string, failure: StreamFailure, welcomed: boolean): void {
    this.#hub.log({
      event: welcomed ? "stream_lost" : "stream_failed",
      coordinator: target,
      code: failure.code,
      message: failure.message,
      leader: failure.leader,
    });
    this.#hub.emit({
      type: "disconnected",
      coordinator: target,
      code: failure.code,
      message: failure.message,
      reason: `${failure.code}: ${failure.message}`,
      welcomed,
      leader: failure.leader,
    });
  }

  /** One HeartbeatStream; resolves when it ends cleanly, throws on failure. */
  async #runStream(target: string): Promise<void> {
    const stream = new StreamAttempt({
      target,
      client: this.client(target),
      hello: this.#protocol.hello(),
      intervalMs: () => this.#protocol.intervalMs,
      probeTimeoutMs: () => this.#probeTimeoutMs(),
      closing: this.#closing.signal,
      log: (entry) => this.#hub.log(entry),
      security: this.#o.security,
      ...(this.#o.metrics === undefined
        ? {}
        : {
            onAckLatency: (seconds: number) =>
              this.#hub.metric({
                name: "shard_worker_heartbeat_ack_seconds",
                kind: "histogram",
                value: seconds,
                labels: {},
              }),
          }),
    });
    this.#stream = stream;
    try {
      await stream.run(this.#protocol.handler(target));
    } finally {
      this.#connectedTo = undefined;
      if (this.#stream === stream) this.#stream = undefined;
      this.#streamDone?.();
      this.#streamDone = undefined;
    }
  }
}
