/**
 * The worker's self-fence (pure; times are monotonic ms from `performance.now()`).
 *
 * The leader expels a member whose heartbeats stopped *arriving* for `sessionTimeoutMs`. A
 * heartbeat arrives after it was sent, so counting our session from the *send* time of the
 * last heartbeat the leader acknowledged makes our deadline come first: once
 * `lastAckedSentAt + sessionTimeoutMs - marginMs` has passed we must assume our shards are
 * being handed to someone else, and stop them. The margin covers clock-rate drift between
 * the two machines and our own timer delays.
 */
export class SessionFence {
  #sessionTimeoutMs = 0;
  #marginMs = 0;
  #lastAckedSentAt = Number.NEGATIVE_INFINITY;
  readonly #sent = new Map<bigint, number>();

  /** Applies the leader's session timeout (from Welcome); the margin is a tenth of it, at least 100 ms. */
  configure(sessionTimeoutMs: number): void {
    this.#sessionTimeoutMs = sessionTimeoutMs;
    this.#marginMs = SessionFence.marginFor(sessionTimeoutMs);
  }

  static marginFor(sessionTimeoutMs: number): number {
    return Math.max(100, Math.round(sessionTimeoutMs / 10));
  }

  /** Records that heartbeat `seq` was sent at `at`. */
  sent(seq: bigint, at: number): void {
    this.#sent.set(seq, at);
    // Only recent heartbeats can still be acknowledged; keep the map small.
    if (this.#sent.size > 64) {
      const oldest = this.#sent.keys().next().value;
      if (oldest !== undefined) this.#sent.delete(oldest);
    }
  }

  /** Records the ack of heartbeat `seq`; returns false when that heartbeat is unknown. */
  acked(seq: bigint): boolean {
    const at = this.#sent.get(seq);
    if (at === undefined) return false;
    for (const k of this.#sent.keys()) {
      if (k <= seq) this.#sent.delete(k);
    }
    if (at > this.#lastAckedSentAt) this.#lastAckedSentAt = at;
    return true;
  }

  /** Starts a session from a Welcome whose Hello was sent at `helloSentAt` (the leader heard us then). */
  welcomed(helloSentAt: number): void {
    if (helloSentAt > this.#lastAckedSentAt) this.#lastAckedSentAt = helloSentAt;
  }

  /**
   * Forgets the heartbeats sent so far, keeping the deadline: a new stream numbers its
   * messages from 1 again, so an ack there must not match a heartbeat of the old stream.
   */
  forgetSent(): void {
    this.#sent.clear();
  }

  /** Forgets the session (after close or an expulsion): nothing is valid until the next ack. */
  reset(): void {
    this.#lastAckedSentAt = Number.NEGATIVE_INFINITY;
    this.#sent.clear();
  }

  /** Milliseconds the session stays valid from `now` (<= 0: fenced). */
  remainingMs(now: number): number {
    return this.#lastAckedSentAt + this.#sessionTimeoutMs - this.#marginMs - now;
  }

  valid(now: number): boolean {
    return this.#sessionTimeoutMs > 0 && this.remainingMs(now) > 0;
  }
}
