/**
 * Which coordinator replica the session tries next (pure; the caller passes monotonic time).
 *
 * - A follower's refusal names the leader: go there at once (at most 3 redirects in a row,
 *   then rotate, so two replicas naming each other cannot keep us busy).
 * - Otherwise rotate through the configured replicas, with backoff.
 * - A replica that stopped answering (no ack, no Welcome, no answer to an HTTP/2 PING) is a
 *   *suspect*. A paused leader is the typical one: its kernel still accepts connections, and
 *   followers keep naming it until its election key expires (up to the leader TTL). Waiting on
 *   it again would burn the time our self-fence has left, so for `recheckMs` after it last
 *   failed to answer, a redirect to it is not followed; after that a redirect to it is, and
 *   the caller first checks it with a quick PING ({@link isSuspect}). Rotation skips suspects
 *   while any other replica is left. A Welcome (or an answered PING) clears the suspicion.
 */

/** A failed attempt, as far as choosing the next replica goes. */
export interface AttemptOutcome {
  /** One line: why the attempt failed (kept per replica for the connect timeout's message). */
  readonly cause: string;
  /** The leader a follower named, if any. */
  readonly leader: string | undefined;
  /** The replica did not answer (rather than refusing). */
  readonly unresponsive: boolean;
}

/** What to do next. */
export interface NextStep {
  readonly target: string;
  /** Back off first (false: a redirect to a named leader, taken at once). */
  readonly backoff: boolean;
}

const maxRedirects = 3;

export class ReplicaPicker {
  readonly #coordinators: readonly string[];
  #recheckMs: number;
  #rotation = 0;
  #target: string;
  #redirects = 0;
  /** Replica -> when it last failed to answer. */
  readonly #suspects = new Map<string, number>();
  readonly #causes = new Map<string, string>();

  constructor(coordinators: readonly string[], recheckMs = 1000) {
    if (coordinators.length === 0) throw new Error("no coordinators");
    this.#coordinators = coordinators;
    this.#recheckMs = recheckMs;
    this.#target = coordinators[0] ?? "";
  }

  /** The replica to try now. */
  get target(): string {
    return this.#target;
  }

  /** How long a replica that failed to answer is avoided (the heartbeat interval, once known). */
  set recheckMs(ms: number) {
    this.#recheckMs = ms;
  }

  /** Whether `replica` failed to answer and has not answered since: check it before waiting on it. */
  isSuspect(replica: string): boolean {
    return this.#suspects.has(replica);
  }

  /** Whether `replica` failed to answer less than `recheckMs` ago. */
  avoided(replica: string, now: number): boolean {
    const at = this.#suspects.get(replica);
    return at !== undefined && now - at < this.#recheckMs;
  }

  /** The current target welcomed us. */
  welcomed(): void {
    this.#redirects = 0;
    this.#suspects.delete(this.#target);
    this.#causes.delete(this.#target);
  }

  /** `replica` did not answer (at `now`). */
  suspect(replica: string, now: number): void {
    this.#suspects.set(replica, now);
  }

  /** `replica` answered a check: it is no longer avoided. */
  answered(replica: string): void {
    this.#suspects.delete(replica);
  }

  /** The attempt on the current target failed: records why and picks the next target. */
  failed(outcome: AttemptOutcome, now: number): NextStep {
    const from = this.#target;
    this.#causes.set(from, outcome.cause);
    if (outcome.unresponsive) this.suspect(from, now);
    const leader = outcome.leader;
    if (
      leader !== undefined &&
      leader !== from &&
      this.#redirects < maxRedirects &&
      !this.avoided(leader, now)
    ) {
      this.#redirects += 1;
      this.#target = leader;
      return { target: leader, backoff: false };
    }
    // No usable leader named (none, a redirect loop, or one that just failed to answer us):
    // rotate through the configured replicas. Rotation goes to a replica that never failed to
    // answer if there is one (a follower's redirect brings us back to a suspect that leads
    // after all), else to one no longer avoided, else to the next.
    this.#redirects = 0;
    const n = this.#coordinators.length;
    const pickWhere = (ok: (c: string) => boolean): number | undefined => {
      for (let i = 1; i <= n; i++) {
        const at = (this.#rotation + i) % n;
        const c = this.#coordinators[at] ?? "";
        if (ok(c) && !(n > 1 && c === from)) return at;
      }
      return undefined;
    };
    const pick = pickWhere((c) => !this.isSuspect(c)) ?? pickWhere((c) => !this.avoided(c, now));
    this.#rotation = pick ?? (this.#rotation + 1) % n;
    this.#target = this.#coordinators[this.#rotation] ?? from;
    return { target: this.#target, backoff: true };
  }

  /** The last cause of failure per replica tried, for an error message: `a: cause; b: cause`. */
  causes(): string {
    return [...this.#causes].map(([r, c]) => `${r}: ${c}`).join("; ");
  }
}
