import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { ControlCommand, ShardService, TaskDispatch, WorkerMessageSchema } from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { Channel } from "./channel.js";
import { CoordinatorClients } from "./coordinator-clients.js";
import { WorkerError } from "./errors.js";
import type { Staleness } from "./leader-order.js";
import { LoadSampler } from "./load-sampler.js";
import type { AssignmentView } from "./ownership.js";
import { ReplicaPicker } from "./replica-picker.js";
import { probeReplica } from "./replica-probe.js";
import { SessionState } from "./session-state.js";
import { sleep } from "./sleep.js";
import { classifyStreamError, StreamAbort, type StreamFailure } from "./stream-failure.js";
import { StreamWatchdog } from "./stream-watchdog.js";
import { viewOfAck, viewOfAssignment } from "./wire-view.js";
import type { EventHub } from "./worker-event.js";
import type { ResolvedWorkerOptions } from "./worker-options.js";

/** A message to the leader, without the sequence numbers the session adds. */
export type Outbound = MessageInitShape<typeof WorkerMessageSchema>["kind"];

/** What a runner may ask of the session. */
export interface SessionPort {
  /** Sends on the current stream; dropped when there is none (the next Hello resynchronises). */
  send(kind: Outbound): void;
}

/** The leader's Welcome, as runners see it. */
export interface WelcomeInfo {
  readonly coordinator: string;
  readonly leaderEpoch: number;
  readonly resumed: boolean;
  readonly incarnation: number;
  /**
   * The leader did not recognise the session this process already had: this is a new
   * incarnation, which starts from nothing (every piece of work stops first).
   */
  readonly newIncarnation: boolean;
}

/** What a runner adds to each heartbeat. */
export interface HeartbeatLoad {
  readonly runningShards?: number;
  readonly runningTasks?: number;
  readonly queueLength?: number;
}

/**
 * Something that runs work under the session: the shard runner today, the task runner next.
 * The session calls it, in this order for a Welcome: `welcomed`, `view` (when the Welcome
 * carries an assignment), `confirmed`. Every call is synchronous and must not throw.
 */
export interface SessionRunner {
  /** A new stream was welcomed (before its assignment is delivered). */
  welcomed(info: WelcomeInfo, now: number): void;
  /** The leader announced an assignment view (Welcome, Assignment or HeartbeatAck), in leader order. */
  view(view: AssignmentView, now: number, ack: boolean): void;
  /** The leader confirmed the session within its fence: work may run. */
  confirmed(now: number): void;
  /** The session fence ran out: every piece of work must stop now. */
  fenced(now: number): void;
  /** Periodic (every 50 ms), for time-based rules such as a stability window. */
  tick(now: number): void;
  /** Figures for the next heartbeat. */
  heartbeatLoad(): HeartbeatLoad;
  /** A control command; return the reply, or undefined when this runner does not handle it. */
  command?(command: ControlCommand): { ok: boolean; message: string } | undefined;
  /** A task dispatched to this worker. */
  task?(dispatch: TaskDispatch): void;
}

const clientVersion = "@org/worker-sdk/0.1.0";

/**
 * The worker's session with the leading coordinator: one HeartbeatStream at a time
 * (following redirects, reconnecting with full-jitter backoff, avoiding replicas that stopped
 * answering), Hello/Welcome, heartbeats and their acks, half-open detection, leader order
 * (stale epochs and versions are rejected) and the self-fence. It delivers what the leader
 * says to its runners and sends what they ask; it knows nothing about shards or tasks.
 */
export class Session implements SessionPort {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #onFatal: (e: WorkerError) => void;
  readonly #runners: SessionRunner[] = [];
  readonly #state = new SessionState();
  readonly #picker: ReplicaPicker;
  readonly #closing = new AbortController();
  readonly #clients: CoordinatorClients;
  readonly #sampler = new LoadSampler();
  #out: Channel<MessageInitShape<typeof WorkerMessageSchema>> | undefined;
  #outSeq = 0n;
  #peerSeq = 0n;
  #sessionToken = "";
  #heartbeatIntervalMs = 1000;
  #incarnation = 0;
  #everWelcomed = false;
  #lastKnownVersion = 0;
  #tick: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #welcomed: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** Whether runners were last told `confirmed` (and not `fenced` since). */
  #confirmed = false;
  #retiring = false;
  /** Leave was sent: the stream that carried it is the last one. */
  #left = false;
  #connectedTo: string | undefined;
  #streamDone: (() => void) | undefined;

  /** `onFatal` is called with an error retrying cannot fix; the owner then closes everything. */
  constructor(o: ResolvedWorkerOptions, hub: EventHub, onFatal: (e: WorkerError) => void) {
    this.#o = o;
    this.#hub = hub;
    this.#onFatal = onFatal;
    this.#picker = new ReplicaPicker(o.coordinators, 2 * this.#heartbeatIntervalMs);
    this.#clients = new CoordinatorClients(o.pingIntervalMs);
  }

  /** Adds a runner; call before {@link start}. */
  attach(runner: SessionRunner): void {
    this.#runners.push(runner);
  }

  /** Starts the connection loop; resolves on the first Welcome, rejects on a fatal refusal or timeout. */
  async start(): Promise<void> {
    const { connectTimeoutMs } = this.#o;
    this.#sampler.start();
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
    return this.#state.leaderEpoch;
  }

  get incarnation(): number {
    return this.#incarnation;
  }

  /** The replica the session talks to (or is about to). */
  get target(): string {
    return this.#picker.target;
  }

  get sessionToken(): string {
    return this.#sessionToken;
  }

  /** Whether the self-fence still holds at `now`. */
  valid(now: number): boolean {
    return this.#state.valid(now);
  }

  /** No runner is confirmed again from now on (the worker is closing). */
  retire(): void {
    this.#retiring = true;
    this.#confirmed = false;
  }

  /** Checks the fence now (runners are told `fenced` the moment it ran out), then ticks the runners. */
  tick(): void {
    const now = performance.now();
    if (this.#checkFence(now)) return;
    for (const r of this.#runners) r.tick(now);
  }

  /**
   * Tells the runners `fenced` when the fence ran out since they were confirmed. Called every
   * 50 ms and before anything from the leader is acted on: a view that arrives after the fence
   * ran out, but before the next tick, must not start anything.
   */
  #checkFence(now: number): boolean {
    if (!this.#confirmed || this.#state.valid(now)) return false;
    this.#confirmed = false;
    this.#hub.log({ event: "fenced", leaderEpoch: this.#state.leaderEpoch });
    this.#hub.emit({ type: "fenced" });
    for (const r of this.#runners) r.fenced(now);
    return true;
  }

  send(kind: Outbound): void {
    const out = this.#out;
    if (out === undefined) return;
    this.#outSeq += 1n;
    out.push({ seq: this.#outSeq, ackSeq: this.#peerSeq, kind });
  }

  /**
   * Sends Leave on an open stream and waits (at most 1 s) for the leader to end it cleanly.
   * `restart`: a planned restart; the leader keeps the membership for its restart grace.
   */
  async leave(reason: string, restart: boolean): Promise<void> {
    const out = this.#out;
    if (out === undefined || out.closed) return;
    this.#left = true;
    this.send({ case: "leave", value: { reason, restart } });
    await Promise.race([this.#loopIdle(), sleep(1000, undefined).catch(() => undefined)]);
  }

  /** Ends the loop, the stream, every connection and timer. */
  async close(): Promise<void> {
    this.#closing.abort(new WorkerError("closed", "worker closed"));
    clearInterval(this.#tick);
    this.#sampler.close();
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
    return Math.min(2000, Math.max(200, 0.75 * this.#heartbeatIntervalMs));
  }

  #fail(e: WorkerError): void {
    this.#welcomed?.reject(e);
    this.#onFatal(e);
  }

  #loopIdle(): Promise<void> {
    return new Promise((resolve) => {
      if (this.#out === undefined) resolve();
      else this.#streamDone = resolve;
    });
  }

  async #connectLoop(): Promise<void> {
    const signal = this.#closing.signal;
    const { backoff } = this.#o;
    let attempt = 0;
    const pause = async () => {
      // While the fence still holds, our shards keep running only if we find the leader in
      // time: poll at most half a heartbeat interval apart. Otherwise, the configured backoff.
      const hurry = this.#everWelcomed && this.#state.valid(performance.now());
      const capMs = hurry ? Math.min(backoff.capMs, this.#heartbeatIntervalMs / 2) : backoff.capMs;
      await sleep(backoffDelay(attempt, { ...backoff, capMs }), signal).catch(() => undefined);
      attempt += 1;
    };
    while (!signal.aborted) {
      const target = this.#picker.target;
      if (this.#picker.isSuspect(target)) {
        // It failed to answer us before: check that it answers at all before waiting on it.
        const probeMs = this.#probeTimeoutMs();
        if (await probeReplica(target, probeMs, signal)) this.#picker.answered(target);
        else {
          if (signal.aborted) break;
          const message = `no answer to an HTTP/2 PING within ${probeMs} ms`;
          this.#hub.log({ event: "replica_unresponsive", coordinator: target, message });
          const step = this.#picker.failed(
            { cause: `UNRESPONSIVE: ${message}`, leader: undefined, unresponsive: true },
            performance.now(),
          );
          if (step.backoff) await pause();
          continue;
        }
      }
      let welcomed = false;
      let failure: StreamFailure;
      try {
        await this.#runStream(target, () => {
          attempt = 0;
          welcomed = true;
          this.#picker.welcomed();
        });
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
      }
      if (signal.aborted || this.#left) break; // after Leave: never join again
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
      // A refusal retrying cannot fix ends the worker; but once we were welcomed, one replica
      // that is not a coordinator (a bad address in the list) is only avoided.
      if (failure.fatal !== undefined && !(this.#everWelcomed && failure.fatal === "not_coordinator")) {
        this.#fail(new WorkerError(failure.fatal, `${target}: ${failure.message}`));
        break;
      }
      const unresponsive = failure.unresponsive || failure.fatal !== undefined;
      // Its connection may be the wedged part: the next attempt there opens a fresh one.
      if (unresponsive) this.#clients.reset(target);
      const step = this.#picker.failed(
        { cause: `${failure.code}: ${failure.message}`, leader: failure.leader, unresponsive },
        performance.now(),
      );
      if (step.backoff) await pause();
    }
  }

  /** One HeartbeatStream; resolves when it ends cleanly, throws on failure. */
  async #runStream(target: string, onWelcome: () => void): Promise<void> {
    const out = new Channel<MessageInitShape<typeof WorkerMessageSchema>>();
    const streamAbort = new AbortController();
    const onClose = () => streamAbort.abort();
    this.#closing.signal.addEventListener("abort", onClose, { once: true });
    this.#out = out;
    this.#outSeq = 0n;
    this.#peerSeq = 0n;
    this.#state.newStream();
    const o = this.#o;
    const helloSentAt = performance.now();
    this.send({
      case: "hello",
      value: {
        group: o.group,
        nodeId: o.nodeId,
        sessionToken: this.#sessionToken,
        labels: { ...o.labels },
        capacity: o.capacity,
        lastKnownVersion: BigInt(this.#lastKnownVersion),
        runningTaskIds: [],
        clientVersion,
      },
    });
    let welcomed = false;
    let heartbeat: NodeJS.Timeout | undefined;
    const beat = () => {
      heartbeat = setTimeout(beat, this.#heartbeatIntervalMs);
      this.#sendHeartbeat();
    };
    const watchdog = new StreamWatchdog({
      target,
      resuming: this.#sessionToken !== "",
      startedAt: helloSentAt,
      intervalMs: () => this.#heartbeatIntervalMs,
      probeTimeoutMs: () => this.#probeTimeoutMs(),
      probe: (ms) => probeReplica(target, ms, streamAbort.signal),
      abort: (reason) => streamAbort.abort(reason),
      log: (entry) => this.#hub.log(entry),
    });
    try {
      for await (const msg of this.client(target).heartbeatStream(out, { signal: streamAbort.signal })) {
        this.#peerSeq = msg.seq;
        const now = performance.now();
        this.#checkFence(now);
        const kind = msg.kind;
        if (kind.case === "welcome") {
          const w = kind.value;
          const d = this.#state.welcome(
            {
              leaderEpoch: Number(w.leaderEpoch),
              view: w.assignment === undefined ? undefined : viewOfAssignment(w.assignment),
              sessionTimeoutMs: w.sessionTimeoutMs,
              helloSentAt,
            },
            now,
          );
          if (d.stale !== undefined) {
            this.#rejectStale(target, d.stale, streamAbort);
            break;
          }
          welcomed = true;
          watchdog.welcomed(now);
          this.#connectedTo = target;
          onWelcome();
          const newIncarnation = !w.resumed && this.#everWelcomed;
          this.#everWelcomed = true;
          this.#sessionToken = w.sessionToken;
          this.#incarnation = Number(w.incarnation);
          this.#setInterval(w.heartbeatIntervalMs);
          const info: WelcomeInfo = {
            coordinator: target,
            leaderEpoch: this.#state.leaderEpoch,
            resumed: w.resumed,
            incarnation: this.#incarnation,
            newIncarnation,
          };
          this.#hub.log({
            event: "welcomed",
            coordinator: target,
            leaderEpoch: info.leaderEpoch,
            resumed: w.resumed,
            incarnation: info.incarnation,
            newIncarnation,
            version: d.view?.version ?? 0,
            phase: d.view?.phase,
          });
          for (const r of this.#runners) r.welcomed(info, now);
          this.#hub.emit({
            type: "connected",
            coordinator: target,
            leaderEpoch: info.leaderEpoch,
            resumed: w.resumed,
            incarnation: info.incarnation,
          });
          if (d.view !== undefined) this.#deliverView(d.view, now, false);
          if (d.confirm) this.#confirm(now);
          beat();
          this.#welcomed?.resolve();
          continue;
        }
        if (!welcomed) continue;
        switch (kind.case) {
          case "heartbeatAck": {
            const ack = kind.value;
            watchdog.acked(now);
            if (!ack.accepted) break;
            if (ack.heartbeatIntervalMs > 0) this.#setInterval(ack.heartbeatIntervalMs);
            const d = this.#state.ack(
              {
                leaderEpoch: Number(ack.leaderEpoch),
                view: viewOfAck(ack),
                heartbeatSeq: ack.heartbeatSeq,
                sessionTimeoutMs: ack.sessionTimeoutMs,
              },
              now,
            );
            if (d.stale !== undefined) {
              this.#rejectStale(target, d.stale, streamAbort);
              break;
            }
            // The ack's view first: confirming first would restart shards of a stale version.
            if (d.view !== undefined) this.#deliverView(d.view, now, true);
            if (d.confirm) this.#confirm(now);
            break;
          }
          case "assignment": {
            const d = this.#state.assignment(viewOfAssignment(kind.value));
            if (d.stale !== undefined) {
              this.#rejectStale(target, d.stale, streamAbort);
              break;
            }
            if (d.view !== undefined) this.#deliverView(d.view, performance.now(), false);
            break;
          }
          case "command":
            this.#command(kind.value);
            break;
          case "task":
            for (const r of this.#runners) r.task?.(kind.value);
            break;
          default:
            break;
        }
        if (streamAbort.signal.aborted) break;
      }
      // Ended by our own abort (a stale leader, or the watchdog): report why.
      const reason: unknown = streamAbort.signal.reason;
      if (reason instanceof StreamAbort) throw reason;
    } catch (e) {
      const reason: unknown = streamAbort.signal.reason;
      throw reason instanceof StreamAbort ? reason : e;
    } finally {
      watchdog.close();
      clearTimeout(heartbeat);
      this.#connectedTo = undefined;
      this.#closing.signal.removeEventListener("abort", onClose);
      out.close();
      if (this.#out === out) this.#out = undefined;
      this.#streamDone?.();
      this.#streamDone = undefined;
    }
  }

  /** Applies a heartbeat interval the leader named (Welcome, or an ack after a config change). */
  #setInterval(ms: number): void {
    const next = Math.max(50, ms);
    this.#heartbeatIntervalMs = next;
    // A replica that stopped answering is avoided for 2 intervals: long enough for followers
    // to stop naming a paused leader in most failovers, short enough to come back to a leader
    // that was only slow before our fence runs out.
    this.#picker.recheckMs = 2 * next;
  }

  #rejectStale(target: string, stale: Staleness, streamAbort: AbortController): void {
    this.#hub.log({
      event: "stale_view",
      coordinator: target,
      reason: stale.reason,
      leaderEpoch: stale.epoch,
      version: stale.version,
      seenEpoch: stale.seenEpoch,
      actedVersion: stale.actedVersion,
    });
    this.#hub.emit({
      type: "stale_view",
      coordinator: target,
      reason: stale.reason,
      leaderEpoch: stale.epoch,
      version: stale.version,
      seenEpoch: stale.seenEpoch,
      actedVersion: stale.actedVersion,
    });
    streamAbort.abort(
      new StreamAbort(
        "STALE_LEADER",
        stale.reason === "stale_epoch"
          ? `leader epoch ${stale.epoch} is older than epoch ${stale.seenEpoch} already seen`
          : `version ${stale.version} is older than version ${stale.actedVersion} already acted on in epoch ${stale.epoch}`,
      ),
    );
  }

  #deliverView(view: AssignmentView, now: number, ack: boolean): void {
    // The message may have shortened the fence (a new session timeout): nothing may start past it.
    this.#checkFence(now);
    if (view.version > this.#lastKnownVersion) this.#lastKnownVersion = view.version;
    for (const r of this.#runners) r.view(view, now, ack);
  }

  #confirm(now: number): void {
    if (this.#retiring) return;
    this.#confirmed = true;
    for (const r of this.#runners) r.confirmed(now);
  }

  #command(c: ControlCommand): void {
    for (const r of this.#runners) {
      const reply = r.command?.(c);
      if (reply !== undefined) {
        this.send({ case: "commandAck", value: { commandId: c.commandId, ...reply } });
        return;
      }
    }
    this.send({
      case: "commandAck",
      value: { commandId: c.commandId, ok: false, message: "not supported by this SDK version" },
    });
  }

  #sendHeartbeat(): void {
    const now = performance.now();
    const seq = this.#outSeq + 1n;
    this.#state.sent(seq, now);
    let load = 0;
    try {
      load = this.#o.load?.() ?? 0;
    } catch {
      load = 0;
    }
    let runningShards = 0;
    let runningTasks = 0;
    let queueLength = 0;
    for (const r of this.#runners) {
      const l = r.heartbeatLoad();
      runningShards += l.runningShards ?? 0;
      runningTasks += l.runningTasks ?? 0;
      queueLength += l.queueLength ?? 0;
    }
    this.send({
      case: "heartbeat",
      value: {
        nodeId: this.#o.nodeId,
        ts: BigInt(Date.now()),
        load,
        ...this.#sampler.sample(now),
        runningTasks,
        queueLength,
        runningShards,
      },
    });
  }
}
