/**
 * The order of what leaders say (pure). Leader epochs only grow (an epoch is the etcd create
 * revision of the leader's election key), and within one epoch assignment versions only grow.
 * So a message from an epoch lower than one already seen comes from a deposed leader, and a
 * version lower than one already acted on in the same epoch is a step back in time: acting on
 * either could restart shards that have since moved. A higher epoch may carry a lower version
 * (a new leader that lost the state hands off through a pending version): that is the new
 * truth, and accepted.
 */

/** Why a message from a leader was rejected. */
export interface Staleness {
  /** `stale_epoch`: from a leader older than one already seen; `stale_version`: a version older than one acted on in its epoch. */
  readonly reason: "stale_epoch" | "stale_version";
  /** The message's leader epoch and version (undefined when it named none). */
  readonly epoch: number;
  readonly version: number | undefined;
  /** The highest epoch seen so far, and the highest version acted on in it (-1: none). */
  readonly seenEpoch: number;
  readonly actedVersion: number;
}

export class LeaderOrder {
  #epoch = 0;
  #version = -1;

  /** The highest leader epoch accepted so far (0: none). */
  get epoch(): number {
    return this.#epoch;
  }

  /** The highest version acted on in {@link epoch} (-1: none). */
  get version(): number {
    return this.#version;
  }

  /** Why a message of `epoch` (naming `version`, if any) must be rejected; undefined when it may be acted on. */
  check(epoch: number, version?: number): Staleness | undefined {
    if (epoch < this.#epoch) return this.#stale("stale_epoch", epoch, version);
    if (epoch === this.#epoch && version !== undefined && version < this.#version)
      return this.#stale("stale_version", epoch, version);
    return undefined;
  }

  /**
   * Checks the message and, when it may be acted on, records it (a higher epoch starts a new
   * order of versions). Returns why it was rejected, or undefined when accepted.
   */
  admit(epoch: number, version?: number): Staleness | undefined {
    const stale = this.check(epoch, version);
    if (stale !== undefined) return stale;
    if (epoch > this.#epoch) {
      this.#epoch = epoch;
      this.#version = -1;
    }
    if (version !== undefined && version > this.#version) this.#version = version;
    return undefined;
  }

  #stale(reason: Staleness["reason"], epoch: number, version: number | undefined): Staleness {
    return { reason, epoch, version, seenEpoch: this.#epoch, actedVersion: this.#version };
  }
}
