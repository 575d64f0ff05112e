import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type {
  Assignment,
  ControlCommand,
  HeartbeatAck,
  HeartbeatSchema,
  HelloSchema,
  ShardService,
  TaskDispatch,
  Welcome,
  WorkerMessageSchema,
} from "@org/proto";
import { Channel } from "./channel.js";
import { probeReplica } from "./replica-probe.js";
import type { Outbound } from "./session-runner.js";
import { StreamAbort } from "./stream-failure.js";
import { StreamWatchdog } from "./stream-watchdog.js";
import type { ResolvedTransportSecurity } from "./transport-security.js";

/**
 * What the session makes of what one stream brings. Each message handler may return a
 * {@link StreamAbort} to end the stream (a stale leader); it is thrown from {@link StreamAttempt.run}.
 */
export interface StreamHandler {
  /** Any message arrived (before it is handled). */
  arrived(now: number): void;
  welcome(w: Welcome, now: number, helloSentAt: number): StreamAbort | undefined;
  ack(a: HeartbeatAck, now: number): StreamAbort | undefined;
  assignment(a: Assignment, now: number): StreamAbort | undefined;
  command(c: ControlCommand): void;
  task(t: TaskDispatch): void;
  /** The next heartbeat, which will carry sequence number `seq`. */
  heartbeat(seq: bigint, now: number): MessageInitShape<typeof HeartbeatSchema>;
}

export interface StreamAttemptOptions {
  readonly target: string;
  readonly client: Client<typeof ShardService>;
  readonly hello: MessageInitShape<typeof HelloSchema>;
  /** The heartbeat interval in force (it may change while the stream lives). */
  readonly intervalMs: () => number;
  readonly probeTimeoutMs: () => number;
  /** Aborts the stream when the worker closes. */
  readonly closing: AbortSignal;
  readonly log: (entry: Record<string, unknown>) => void;
  /** For the liveness probe's own connection. */
  readonly security?: ResolvedTransportSecurity;
  /** Seconds from a heartbeat sent to its ack received. */
  readonly onAckLatency?: (seconds: number) => void;
}

/**
 * One HeartbeatStream to one replica: the Hello, message numbering both ways (each side acks
 * the highest sequence number it saw), heartbeats at the interval in force once welcomed, and
 * the {@link StreamWatchdog}. What the messages mean is the {@link StreamHandler}'s business.
 */
export class StreamAttempt {
  readonly #o: StreamAttemptOptions;
  readonly #out = new Channel<MessageInitShape<typeof WorkerMessageSchema>>();
  readonly #abort = new AbortController();
  #seq = 0n;
  #peerSeq = 0n;
  /** When each heartbeat still unacknowledged was sent (at most a few: acks come in order). */
  readonly #sentAt = new Map<bigint, number>();

  constructor(o: StreamAttemptOptions) {
    this.#o = o;
  }

  /** Whether the stream can still carry messages. */
  get open(): boolean {
    return !this.#out.closed;
  }

  /** Numbers and queues a message; returns its sequence number (0 when the stream is over). */
  send(kind: Outbound): bigint {
    if (this.#out.closed) return 0n;
    this.#seq += 1n;
    this.#out.push({ seq: this.#seq, ackSeq: this.#peerSeq, kind });
    return this.#seq;
  }

  /** Ends the stream for `reason` (run() then throws it). */
  abort(reason: StreamAbort): void {
    this.#abort.abort(reason);
  }

  /** Runs the stream: resolves when the leader ends it cleanly, throws why it failed otherwise. */
  async run(h: StreamHandler): Promise<void> {
    const o = this.#o;
    const onClose = () => this.#abort.abort();
    o.closing.addEventListener("abort", onClose, { once: true });
    const signal = this.#abort.signal;
    const helloSentAt = performance.now();
    this.send({ case: "hello", value: o.hello });
    let welcomed = false;
    let heartbeat: NodeJS.Timeout | undefined;
    const beat = () => {
      heartbeat = setTimeout(beat, o.intervalMs());
      const now = performance.now();
      const seq = this.send({ case: "heartbeat", value: h.heartbeat(this.#seq + 1n, now) });
      if (o.onAckLatency !== undefined && seq !== 0n) {
        this.#sentAt.set(seq, now);
        // Heartbeats never acked (a lost leader) must not pile up.
        if (this.#sentAt.size > 16) this.#sentAt.delete(this.#sentAt.keys().next().value as bigint);
      }
    };
    const watchdog = new StreamWatchdog({
      target: o.target,
      resuming: o.hello.sessionToken !== undefined && o.hello.sessionToken !== "",
      startedAt: helloSentAt,
      intervalMs: o.intervalMs,
      probeTimeoutMs: o.probeTimeoutMs,
      probe: (ms) => probeReplica(o.target, ms, signal, o.security),
      abort: (reason) => this.abort(reason),
      log: o.log,
    });
    try {
      for await (const msg of o.client.heartbeatStream(this.#out, { signal })) {
        this.#peerSeq = msg.seq;
        const now = performance.now();
        h.arrived(now);
        const kind = msg.kind;
        let refused: StreamAbort | undefined;
        if (kind.case === "welcome") {
          refused = h.welcome(kind.value, now, helloSentAt);
          if (refused === undefined) {
            welcomed = true;
            watchdog.welcomed(now);
            beat();
          }
        } else if (welcomed) {
          switch (kind.case) {
            case "heartbeatAck": {
              watchdog.acked(now);
              const sentAt = this.#sentAt.get(kind.value.heartbeatSeq);
              if (sentAt !== undefined) {
                this.#sentAt.delete(kind.value.heartbeatSeq);
                o.onAckLatency?.((now - sentAt) / 1000);
              }
              if (kind.value.accepted) refused = h.ack(kind.value, now);
              break;
            }
            case "assignment":
              refused = h.assignment(kind.value, now);
              break;
            case "command":
              h.command(kind.value);
              break;
            case "task":
              h.task(kind.value);
              break;
            default:
              break;
          }
        }
        if (refused !== undefined) this.abort(refused);
        if (signal.aborted) break;
      }
      // Ended by our own abort (a stale leader, or the watchdog): say why.
      const reason: unknown = signal.reason;
      if (reason instanceof StreamAbort) throw reason;
    } catch (e) {
      const reason: unknown = signal.reason;
      throw reason instanceof StreamAbort ? reason : e;
    } finally {
      watchdog.close();
      clearTimeout(heartbeat);
      o.closing.removeEventListener("abort", onClose);
      this.#out.close();
    }
  }
}
