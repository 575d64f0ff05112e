import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  type Assignment,
  CommandKind,
  type ControlCommand,
  type HeartbeatAck,
  type HeartbeatSchema,
  type HelloSchema,
  type Welcome,
} from "@org/proto";
import type { Staleness } from "./leader-order.js";
import { LoadSampler } from "./load-sampler.js";
import type { AssignmentView } from "./ownership.js";
import { RunnerSet } from "./runner-set.js";
import type { SessionPort, SessionRunner, WelcomeInfo } from "./session-runner.js";
import { SessionState } from "./session-state.js";
import { type ShardLocation, ShardLocations } from "./shard-location.js";
import type { StreamHandler } from "./stream-attempt.js";
import { StreamAbort } from "./stream-failure.js";
import { viewOfAck, viewOfAssignment } from "./wire-view.js";
import type { EventHub } from "./worker-event.js";
import type { ResolvedWorkerOptions } from "./worker-options.js";

const clientVersion = "@org/worker-sdk/0.1.0";

/** What the protocol tells the connection side. */
export interface ProtocolHooks {
  /** A stream to `target` was welcomed. */
  welcomed(target: string): void;
  /** The heartbeat interval in force changed (Welcome, or an ack after `config set`). */
  intervalChanged(ms: number): void;
}

/**
 * The meaning of what the leader says, across streams: the session token, incarnation and
 * intervals, leader order and the self-fence ({@link SessionState}), the runners, and what
 * each heartbeat reports. The {@link Session} owns the connections and hands each stream a
 * {@link StreamHandler} from {@link handler}.
 */
export class SessionProtocol {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #hooks: ProtocolHooks;
  readonly #port: SessionPort;
  readonly #state = new SessionState();
  readonly #runners = new RunnerSet();
  readonly #sampler = new LoadSampler();
  #token = "";
  #intervalMs = 1000;
  #incarnation = 0;
  #everWelcomed = false;
  #lastKnownVersion = 0;
  /** Whether runners were last told `confirmed` (and not `fenced` since). */
  #confirmed = false;
  #retiring = false;
  /** Data locations of the last Assignment delivered (acks carry none), with its version. */
  readonly #locations = new ShardLocations();
  #locationsVersion = -1;

  constructor(o: ResolvedWorkerOptions, hub: EventHub, hooks: ProtocolHooks, port: SessionPort) {
    this.#o = o;
    this.#hub = hub;
    this.#hooks = hooks;
    this.#port = port;
  }

  attach(runner: SessionRunner): void {
    this.#runners.add(runner);
  }

  start(): void {
    this.#sampler.start();
  }

  close(): void {
    this.#sampler.close();
  }

  get token(): string {
    return this.#token;
  }

  get incarnation(): number {
    return this.#incarnation;
  }

  get leaderEpoch(): number {
    return this.#state.leaderEpoch;
  }

  get intervalMs(): number {
    return this.#intervalMs;
  }

  /** Whether a Welcome was ever accepted. */
  get everWelcomed(): boolean {
    return this.#everWelcomed;
  }

  valid(now: number): boolean {
    return this.#state.valid(now);
  }

  /** No runner is confirmed again from now on (the worker is closing). */
  retire(): void {
    this.#retiring = true;
    this.#confirmed = false;
  }

  /** Checks the fence (runners are told `fenced` the moment it ran out), then ticks the runners. */
  tick(now: number): void {
    if (!this.checkFence(now)) this.#runners.tick(now);
  }

  /**
   * Tells the runners `fenced` when the fence ran out since they were confirmed. Called every
   * 50 ms and before anything from the leader is acted on: a view that arrives after the fence
   * ran out, but before the next tick, must not start anything.
   */
  checkFence(now: number): boolean {
    if (!this.#confirmed || this.#state.valid(now)) return false;
    this.#confirmed = false;
    this.#hub.log({ event: "fenced", leaderEpoch: this.#state.leaderEpoch });
    this.#hub.emit({ type: "fenced" });
    this.#runners.fenced(now);
    return true;
  }

  /** The Hello of the next stream (it presents our token and the last version we saw). */
  hello(): MessageInitShape<typeof HelloSchema> {
    const o = this.#o;
    return {
      group: o.group,
      nodeId: o.nodeId,
      sessionToken: this.#token,
      labels: { ...o.labels },
      capacity: o.capacity,
      lastKnownVersion: BigInt(this.#lastKnownVersion),
      runningTaskIds: this.#runners.heldTaskIds(),
      clientVersion,
    };
  }

  /** What to make of the messages of a new stream to `target`. */
  handler(target: string): StreamHandler {
    this.#state.newStream();
    return {
      arrived: (now) => void this.checkFence(now),
      welcome: (w, now, helloSentAt) => this.#welcome(target, w, now, helloSentAt),
      ack: (a, now) => this.#ack(target, a, now),
      assignment: (a, now) => this.#assignment(target, a, now),
      command: (c) =>
        this.#port.send({
          case: "commandAck",
          value: { commandId: c.commandId, ...this.#command(c) },
        }),
      task: (t) => this.#runners.task(t),
      heartbeat: (seq, now) => this.#heartbeat(seq, now),
    };
  }

  #welcome(target: string, w: Welcome, now: number, helloSentAt: number): StreamAbort | undefined {
    const d = this.#state.welcome(
      {
        leaderEpoch: Number(w.leaderEpoch),
        view: w.assignment === undefined ? undefined : viewOfAssignment(w.assignment),
        sessionTimeoutMs: w.sessionTimeoutMs,
        helloSentAt,
      },
      now,
    );
    if (d.stale !== undefined) return this.#rejectStale(target, d.stale);
    const newIncarnation = !w.resumed && this.#everWelcomed;
    this.#everWelcomed = true;
    this.#token = w.sessionToken;
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
    this.#hooks.welcomed(target);
    this.#runners.welcomed(info, now);
    this.#hub.emit({
      type: "connected",
      coordinator: target,
      leaderEpoch: info.leaderEpoch,
      resumed: w.resumed,
      incarnation: info.incarnation,
    });
    if (d.view !== undefined && w.assignment !== undefined) this.#noteLocations(w.assignment);
    if (d.view !== undefined) this.#deliver(d.view, now, false);
    if (d.confirm) this.#confirm(now);
    return undefined;
  }

  #ack(target: string, ack: HeartbeatAck, now: number): StreamAbort | undefined {
    const d = this.#state.ack(
      {
        leaderEpoch: Number(ack.leaderEpoch),
        view: viewOfAck(ack),
        heartbeatSeq: ack.heartbeatSeq,
        sessionTimeoutMs: ack.sessionTimeoutMs,
      },
      now,
    );
    if (d.stale !== undefined) return this.#rejectStale(target, d.stale);
    if (ack.heartbeatIntervalMs > 0) this.#setInterval(ack.heartbeatIntervalMs);
    this.#runners.recorded(ack.recordedFinals);
    // The ack's view first: confirming first would restart shards of a stale version.
    if (d.view !== undefined) this.#deliver(d.view, now, true);
    if (d.confirm) this.#confirm(now);
    return undefined;
  }

  #assignment(target: string, a: Assignment, now: number): StreamAbort | undefined {
    const d = this.#state.assignment(viewOfAssignment(a));
    if (d.stale !== undefined) return this.#rejectStale(target, d.stale);
    if (d.view !== undefined) this.#noteLocations(a);
    if (d.view !== undefined) this.#deliver(d.view, now, false);
    return undefined;
  }

  #noteLocations(a: Assignment): void {
    this.#locations.update(a.locations);
    this.#locationsVersion = Number(a.version);
  }

  /**
   * Where `shard`'s records live, as the assignment of `version` announced it; undefined
   * when that assignment announced none (the built-in source) or a later one is in force.
   */
  shardLocation(shard: number, version: number): ShardLocation | undefined {
    return version === this.#locationsVersion ? this.#locations.get(shard) : undefined;
  }

  #setInterval(ms: number): void {
    const next = Math.max(50, ms);
    if (next === this.#intervalMs) return;
    this.#intervalMs = next;
    this.#hooks.intervalChanged(next);
  }

  /** Reports a stale message; the stream is then dropped for the returned reason. */
  #rejectStale(target: string, stale: Staleness): StreamAbort {
    const fields = {
      coordinator: target,
      reason: stale.reason,
      leaderEpoch: stale.epoch,
      version: stale.version,
      seenEpoch: stale.seenEpoch,
      actedVersion: stale.actedVersion,
    };
    this.#hub.log({ event: "stale_view", ...fields });
    this.#hub.emit({ type: "stale_view", ...fields });
    return new StreamAbort(
      "STALE_LEADER",
      stale.reason === "stale_epoch"
        ? `leader epoch ${stale.epoch} is older than epoch ${stale.seenEpoch} already seen`
        : `version ${stale.version} is older than version ${stale.actedVersion} already acted on in epoch ${stale.epoch}`,
    );
  }

  #deliver(view: AssignmentView, now: number, ack: boolean): void {
    // The message may have shortened the fence (a new session timeout): nothing may start past it.
    this.checkFence(now);
    if (view.version > this.#lastKnownVersion) this.#lastKnownVersion = view.version;
    this.#runners.view(view, now, ack);
  }

  #confirm(now: number): void {
    if (this.#retiring) return;
    this.#confirmed = true;
    this.#runners.confirmed(now);
  }

  /** The heartbeat that will carry `seq` (its send time starts the fence once acked). */
  /**
   * PAUSE and RESUME concern the whole group and the leader enforces them itself (no new
   * versions, no dispatch; shards keep running): the application only hears of them. The
   * rest goes to the runners (CANCEL_TASK, SET_CAPACITY, DRAIN).
   */
  #command(c: ControlCommand): { ok: boolean; message: string } {
    if (c.kind === CommandKind.PAUSE || c.kind === CommandKind.RESUME) {
      const paused = c.kind === CommandKind.PAUSE;
      this.#hub.log({ event: paused ? "group_paused" : "group_resumed", reason: c.reason });
      this.#hub.emit({ type: paused ? "paused" : "resumed", reason: c.reason });
      return { ok: true, message: `told the application (event ${paused ? "paused" : "resumed"})` };
    }
    return this.#runners.command(c);
  }

  #heartbeat(seq: bigint, now: number): MessageInitShape<typeof HeartbeatSchema> {
    this.#state.sent(seq, now);
    let load = 0;
    try {
      load = this.#o.load?.() ?? 0;
    } catch {
      load = 0;
    }
    return {
      nodeId: this.#o.nodeId,
      ts: BigInt(Date.now()),
      load,
      ...this.#sampler.sample(now),
      ...this.#runners.load(),
    };
  }
}
