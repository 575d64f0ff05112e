import { LeaderOrder, type Staleness } from "./leader-order.js";
import type { AssignmentView } from "./ownership.js";
import { SessionFence } from "./session-fence.js";

/** A Welcome, as far as the session's decisions go. */
export interface WelcomeFacts {
  readonly leaderEpoch: number;
  /** Its assignment (the epoch is filled in here), when the group has one. */
  readonly view: Omit<AssignmentView, "leaderEpoch"> | undefined;
  readonly sessionTimeoutMs: number;
  /** When the Hello this answers was sent (monotonic ms). */
  readonly helloSentAt: number;
}

/** A HeartbeatAck, as far as the session's decisions go. */
export interface AckFacts {
  /** The acking leader's epoch; 0: the stream's. */
  readonly leaderEpoch: number;
  readonly view: Omit<AssignmentView, "leaderEpoch">;
  readonly heartbeatSeq: bigint;
  /** The session timeout in force; 0: unchanged. */
  readonly sessionTimeoutMs: number;
}

/** What to do with a message from the leader. */
export interface Decision {
  /** Set when the message must be rejected: nothing else is set then. */
  readonly stale?: Staleness;
  /** The view to hand to the runners. */
  readonly view?: AssignmentView;
  /** The leader confirmed the session within its fence: runners may run. */
  readonly confirm: boolean;
}

const rejected = (stale: Staleness): Decision => ({ stale, confirm: false });

/**
 * The session's decisions, pure (the caller passes monotonic time and does the I/O): which
 * leader messages to act on ({@link LeaderOrder}), and how far the self-fence reaches
 * ({@link SessionFence}). A rejected message changes nothing: it neither extends the fence
 * nor confirms the session nor reaches a runner.
 */
export class SessionState {
  readonly #fence = new SessionFence();
  readonly #order = new LeaderOrder();
  #streamEpoch = 0;

  /** The epoch of the leader of the current stream (0 before the first Welcome). */
  get leaderEpoch(): number {
    return this.#streamEpoch;
  }

  /** A new stream starts: sequence numbers restart, so heartbeats of the old one are forgotten. */
  newStream(): void {
    this.#fence.forgetSent();
  }

  welcome(w: WelcomeFacts, now: number): Decision {
    const stale = this.#order.admit(w.leaderEpoch, w.view?.version);
    if (stale !== undefined) return rejected(stale);
    this.#streamEpoch = w.leaderEpoch;
    this.#fence.configure(w.sessionTimeoutMs);
    this.#fence.welcomed(w.helloSentAt);
    return {
      view: w.view === undefined ? undefined : { ...w.view, leaderEpoch: w.leaderEpoch },
      // A Welcome that took longer than the fence (a slow join) confirms nothing.
      confirm: this.#fence.valid(now),
    };
  }

  ack(a: AckFacts, now: number): Decision {
    const epoch = a.leaderEpoch === 0 ? this.#streamEpoch : a.leaderEpoch;
    const stale = this.#order.admit(epoch, a.view.version);
    if (stale !== undefined) return rejected(stale);
    if (epoch > this.#streamEpoch) this.#streamEpoch = epoch;
    if (a.sessionTimeoutMs > 0) this.#fence.configure(a.sessionTimeoutMs);
    const acked = this.#fence.acked(a.heartbeatSeq);
    return { view: { ...a.view, leaderEpoch: epoch }, confirm: acked && this.#fence.valid(now) };
  }

  /** An Assignment pushed on the stream. */
  assignment(view: Omit<AssignmentView, "leaderEpoch">): Decision {
    const stale = this.#order.admit(this.#streamEpoch, view.version);
    if (stale !== undefined) return rejected(stale);
    return { view: { ...view, leaderEpoch: this.#streamEpoch }, confirm: false };
  }

  /** Records that heartbeat `seq` was sent at `at`. */
  sent(seq: bigint, at: number): void {
    this.#fence.sent(seq, at);
  }

  /** Whether the self-fence still holds at `now`. */
  valid(now: number): boolean {
    return this.#fence.valid(now);
  }

  /** Milliseconds the fence still holds from `now` (<= 0: fenced). */
  remainingMs(now: number): number {
    return this.#fence.remainingMs(now);
  }
}
