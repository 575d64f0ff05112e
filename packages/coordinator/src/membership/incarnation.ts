/**
 * Incarnation rules (pure). Each process that says Hello under a node id is an
 * *incarnation* of that member; only the live one may run the member's shards, and a new one
 * may start nothing while an earlier one may still be running (DESIGN.md, "Incarnations").
 *
 * What "may still be running" means: a worker stops by itself when its session fence runs
 * out, `sessionTimeout` after the *send* of its last acknowledged heartbeat; that send came
 * before our ack, so `lastAckSentAt + sessionTimeout` bounds it from above. A member we
 * loaded from etcd after a failover was last acknowledged by the previous leader, before we
 * took over, so the takeover time stands in for its last ack.
 */

/** What the leader knows of the incarnation that holds a node id now. */
export interface LiveIncarnation {
  /** sha256 of its session token ("" when unknown: a record that failed validation). */
  readonly tokenHash: string;
  /** A stream of it is attached (open, or its Hello is being decided). */
  readonly attached: boolean;
  /**
   * It runs nothing: it stopped everything for a planned restart, or it was never admitted
   * (a new incarnation still waiting for an earlier one).
   */
  readonly stopped: boolean;
  /** Monotonic ms of the last Welcome or ack sent to it (the takeover time if loaded). */
  readonly lastAckSentAt: number;
  /** An even earlier incarnation may run until then (−Infinity: none). */
  readonly priorFenceUntil: number;
}

/** The answer to a Hello. */
export type HelloDecision =
  /** The live incarnation has a stream and the Hello does not carry its token. */
  | { readonly kind: "duplicate" }
  /** The Hello carries the live incarnation's token: same incarnation, new stream. */
  | { readonly kind: "resume" }
  /** A new incarnation; it may start nothing before `runsAfter` (monotonic ms). */
  | { readonly kind: "new"; readonly runsAfter: number };

export interface HelloInput {
  /** The member as it stands, or undefined when the node id is not a member. */
  readonly live: LiveIncarnation | undefined;
  /**
   * For a node id that is not a member: until when an incarnation we (or a previous leader)
   * removed may still run. −Infinity when none can.
   */
  readonly goneFenceUntil: number;
  /** sha256 of the token the Hello presents ("" for none). */
  readonly presentedHash: string;
  /** The longest session timeout any incarnation may have been given, in ms. */
  readonly sessionTimeoutMs: number;
}

/**
 * Decides a Hello. A token decides identity only when it matches the live incarnation's;
 * anything else is a new process, which supersedes the live one unless that one still has a
 * stream (then the node id is in use: a duplicate deployment, or a stranger).
 */
export function decideHello(input: HelloInput): HelloDecision {
  const { live, presentedHash } = input;
  if (live === undefined) return { kind: "new", runsAfter: input.goneFenceUntil };
  if (presentedHash !== "" && live.tokenHash !== "" && presentedHash === live.tokenHash)
    return { kind: "resume" };
  if (live.attached) return { kind: "duplicate" };
  return { kind: "new", runsAfter: supersededUntil(live, input.sessionTimeoutMs) };
}

/** Until when a superseded (or removed) incarnation, and any before it, may still run. */
export function supersededUntil(live: LiveIncarnation, sessionTimeoutMs: number): number {
  const own = live.stopped ? Number.NEGATIVE_INFINITY : live.lastAckSentAt + sessionTimeoutMs;
  return Math.max(live.priorFenceUntil, own);
}
