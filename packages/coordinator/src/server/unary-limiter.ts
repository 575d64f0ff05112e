import { TokenBucket } from "./rate-limiter.js";

/**
 * Rate limits for the unary and server-streaming calls (GetShardInfo, FetchShardData): each
 * costs linearizable etcd reads, so one misbehaving client must not be able to turn the
 * replica into an etcd load generator. One bucket for the replica, one per (group, node).
 */
export class UnaryLimiter {
  readonly #global: TokenBucket;
  readonly #perNode = new Map<string, TokenBucket>();
  readonly #nodeRate: number;

  constructor(perSecond: number, perNodePerSecond: number, now: number) {
    this.#global = new TokenBucket(2 * perSecond, perSecond, now);
    this.#nodeRate = perNodePerSecond;
  }

  /** Takes a token for a call by (group, node); returns why not when over a limit. */
  take(group: string, nodeId: string, now: number): string | undefined {
    const key = `${group}\u0000${nodeId}`;
    let b = this.#perNode.get(key);
    if (b === undefined) {
      if (this.#perNode.size >= 100_000) this.#perNode.clear(); // bounded; a reset only forgives
      b = new TokenBucket(2 * this.#nodeRate, this.#nodeRate, now);
      this.#perNode.set(key, b);
    }
    if (!b.take(now))
      return `more than ${this.#nodeRate} calls per second for node ${nodeId} of group ${group}`;
    if (!this.#global.take(now)) return "this replica is over its rate of GetShardInfo/FetchShardData calls";
    return undefined;
  }
}
