import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { ControlCommand, ShardService, TaskDispatch, WorkerMessageSchema } from "@org/proto";
import { backoffDelay } from "./backoff.js";
import { Channel } from "./channel.js";
import { CoordinatorClients } from "./coordinator-clients.js";
import { WorkerError } from "./errors.js";
import { LoadSampler } from "./load-sampler.js";
import type { AssignmentView } from "./ownership.js";
import { SessionFence } from "./session-fence.js";
import { sleep } from "./sleep.js";
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
  /** The leader announced an assignment view (Welcome, Assignment or HeartbeatAck). */
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
 * (following redirects, reconnecting with full-jitter backoff), Hello/Welcome, heartbeats and
 * their acks, half-open detection, and the self-fence. It delivers what the leader says to its
 * runners and sends what they ask; it knows nothing about shards or tasks.
 */
export class Session implements SessionPort {
  readonly #o: ResolvedWorkerOptions;
  readonly #hub: EventHub;
  readonly #onFatal: (e: Error) => void;
  readonly #runners: SessionRunner[] = [];
  readonly #fence = new SessionFence();
  readonly #closing = new AbortController();
  readonly #clients: CoordinatorClients;
  readonly #sampler = new LoadSampler();
  #target: string;
  #out: Channel<MessageInitShape<typeof WorkerMessageSchema>> | undefined;
  #outSeq = 0n;
  #peerSeq = 0n;
  #sessionToken = "";
  #heartbeatIntervalMs = 1000;
  #leaderEpoch = 0;
  #tick: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #welcomed: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** Whether runners were last told `confirmed` (and not `fenced` since). */
  #confirmed = false;
  #retiring = false;
  #connectedTo: string | undefined;
  #streamDone: (() => void) | undefined;

  /** `onFatal` is called with an error retrying cannot fix; the owner then closes everything. */
  constructor(o: ResolvedWorkerOptions, hub: EventHub, onFatal: (e: Error) => void) {
    this.#o = o;
    this.#hub = hub;
    this.#onFatal = onFatal;
    this.#target = o.coordinators[0] ?? "";
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
    const timer = setTimeout(
      () =>
        this.#welcomed?.reject(
          new WorkerError("unavailable", `no coordinator welcomed us within ${connectTimeoutMs} ms`),
        ),
      connectTimeoutMs,
    );
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
    return this.#leaderEpoch;
  }

  /** The replica the session talks to (or is about to). */
  get target(): string {
    return this.#target;
  }

  get sessionToken(): string {
    return this.#sessionToken;
  }

  /** Whether the self-fence still holds at `now`. */
  valid(now: number): boolean {
    return this.#fence.valid(now);
  }

  /** No runner is confirmed again from now on (the worker is closing). */
  retire(): void {
    this.#retiring = true;
    this.#confirmed = false;
  }

  /** Checks the fence now: runners are told `fenced` the moment it ran out. */
  tick(): void {
    const now = performance.now();
    if (this.#confirmed && !this.#fence.valid(now)) {
      this.#confirmed = false;
      this.#hub.log({ event: "fenced", leaderEpoch: this.#leaderEpoch });
      this.#hub.emit({ type: "fenced" });
      for (const r of this.#runners) r.fenced(now);
      return;
    }
    for (const r of this.#runners) r.tick(now);
  }

  send(kind: Outbound): void {
    const out = this.#out;
    if (out === undefined) return;
    this.#outSeq += 1n;
    out.push({ seq: this.#outSeq, ackSeq: this.#peerSeq, kind });
  }

  /** Sends Leave on an open stream and waits (at most 1 s) for the leader to end it cleanly. */
  async leave(reason: string): Promise<void> {
    const out = this.#out;
    if (out === undefined || out.closed) return;
    this.send({ case: "leave", value: { reason } });
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

  #fail(e: Error): void {
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
    const { coordinators, backoff } = this.#o;
    let attempt = 0;
    let rotation = 0;
    let redirects = 0;
    while (!signal.aborted) {
      const target = this.#target;
      let welcomed = false;
      try {
        await this.#runStream(target, () => {
          attempt = 0;
          redirects = 0;
          welcomed = true;
        });
        this.#hub.emit({ type: "disconnected", coordinator: target, reason: "stream ended" });
      } catch (e) {
        if (signal.aborted) break;
        const ce = ConnectError.from(e);
        const leader = ce.metadata.get("x-shard-leader");
        this.#hub.log({
          event: "stream_failed",
          coordinator: target,
          code: Code[ce.code],
          message: ce.rawMessage,
          leader,
        });
        if (welcomed) this.#hub.emit({ type: "disconnected", coordinator: target, reason: ce.rawMessage });
        if (ce.code === Code.InvalidArgument) {
          // Our group or node id is invalid: retrying cannot fix it.
          this.#fail(new WorkerError("refused", ce.rawMessage, { cause: ce }));
          break;
        }
        if (leader !== null && leader !== "" && leader !== target && redirects < 3) {
          redirects += 1;
          this.#target = leader;
          continue; // a follower named the leader: go straight there
        }
      }
      if (signal.aborted) break;
      // No leader named (or a redirect loop): rotate through the configured replicas.
      rotation = (rotation + 1) % coordinators.length;
      this.#target = coordinators[rotation] ?? target;
      redirects = 0;
      await sleep(backoffDelay(attempt, backoff), signal).catch(() => undefined);
      attempt += 1;
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
    // A replica that is paused (SIGSTOP) still accepts TCP connections in the kernel, but never
    // answers: a reconnect must not wait on it past the self-fence. Resuming a session writes
    // nothing on the leader, so its Welcome is quick; a first join (etcd writes) gets no bound.
    const welcomeTimer =
      this.#sessionToken === ""
        ? undefined
        : setTimeout(
            () =>
              streamAbort.abort(
                new WorkerError(
                  "unavailable",
                  `no Welcome from ${target} within ${2 * this.#heartbeatIntervalMs} ms`,
                ),
              ),
            Math.max(500, 2 * this.#heartbeatIntervalMs),
          );
    let lastAckAt = performance.now();
    try {
      for await (const msg of this.client(target).heartbeatStream(out, { signal: streamAbort.signal })) {
        this.#peerSeq = msg.seq;
        const now = performance.now();
        const kind = msg.kind;
        if (kind.case === "welcome") {
          clearTimeout(welcomeTimer);
          const w = kind.value;
          welcomed = true;
          this.#connectedTo = target;
          onWelcome();
          this.#sessionToken = w.sessionToken;
          this.#leaderEpoch = Number(w.leaderEpoch);
          this.#heartbeatIntervalMs = Math.max(50, w.heartbeatIntervalMs);
          this.#fence.configure(w.sessionTimeoutMs);
          this.#fence.welcomed(helloSentAt);
          const info: WelcomeInfo = {
            coordinator: target,
            leaderEpoch: this.#leaderEpoch,
            resumed: w.resumed,
          };
          for (const r of this.#runners) r.welcomed(info, now);
          lastAckAt = now;
          this.#hub.log({
            event: "welcomed",
            coordinator: target,
            leaderEpoch: this.#leaderEpoch,
            resumed: w.resumed,
            version: Number(w.assignment?.version ?? 0n),
          });
          this.#hub.emit({
            type: "connected",
            coordinator: target,
            leaderEpoch: this.#leaderEpoch,
            resumed: w.resumed,
          });
          if (w.assignment !== undefined) this.#deliverView(viewOfAssignment(w.assignment), now, false);
          this.#confirm(now);
          heartbeat = setInterval(() => {
            if (performance.now() - lastAckAt > 3 * this.#heartbeatIntervalMs) {
              // Half-open: the connection looks fine but nothing answers. Drop it and reconnect.
              this.#hub.log({
                event: "no_ack",
                coordinator: target,
                silentMs: Math.round(performance.now() - lastAckAt),
              });
              streamAbort.abort(new WorkerError("unavailable", "no heartbeat ack for 3 intervals"));
              return;
            }
            this.#sendHeartbeat();
          }, this.#heartbeatIntervalMs);
          this.#welcomed?.resolve();
          continue;
        }
        if (!welcomed) continue;
        switch (kind.case) {
          case "heartbeatAck": {
            const ack = kind.value;
            lastAckAt = now;
            if (!ack.accepted) break;
            // The ack's view first: confirming first would restart shards of a stale version.
            const acked = this.#fence.acked(ack.heartbeatSeq);
            this.#deliverView(viewOfAck(ack), now, true);
            if (acked && this.#fence.valid(now)) this.#confirm(now);
            break;
          }
          case "assignment":
            this.#deliverView(viewOfAssignment(kind.value), now, false);
            break;
          case "command":
            this.#command(kind.value);
            break;
          case "task":
            for (const r of this.#runners) r.task?.(kind.value);
            break;
          default:
            break;
        }
      }
    } finally {
      clearInterval(heartbeat);
      clearTimeout(welcomeTimer);
      this.#connectedTo = undefined;
      this.#closing.signal.removeEventListener("abort", onClose);
      out.close();
      if (this.#out === out) this.#out = undefined;
      this.#streamDone?.();
      this.#streamDone = undefined;
    }
  }

  #lastKnownVersion = 0;

  #deliverView(view: AssignmentView, now: number, ack: boolean): void {
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
    this.#fence.sent(seq, now);
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
