import type { Etcd3, ILeaseKeepAliveResponse, LeaseClient } from "etcd3";
import type { Logger } from "pino";
import {
  type LeaseKeepAliveStream,
  openLeaseKeepAlive,
  rawLeaseClient,
  revokeEverywhere,
} from "../store/etcd-client.js";

/** What one keep-alive answer tells: etcd acknowledged a keep-alive that we sent at `sentAt`. */
export interface LeaseAck {
  readonly leaseId: string;
  /** Remaining TTL etcd granted, in seconds; 0 means the lease no longer exists. */
  readonly ttlSec: number;
  /** `performance.now()` when the acknowledged keep-alive was written. */
  readonly sentAt: number;
}

/**
 * Grants, keeps alive and revokes etcd leases over ONE keep-alive stream, and reports for
 * each answer when the acknowledged request was sent. Counting a lease's life from the
 * send time (not the answer's arrival) is what lets the leader fence itself before etcd
 * can have expired its lease (DESIGN.md, "the leader fences itself").
 */
export class LeaseKeeper {
  readonly #client: Etcd3;
  readonly #leases: LeaseClient;
  // The host of the current stream, and the one whose stream last stalled (avoided next).
  #streamHost: object | undefined;
  #avoidHost: object | undefined;
  readonly #log: Logger;
  readonly #onAck: (ack: LeaseAck) => void;
  #stream: LeaseKeepAliveStream | undefined;
  #opening: Promise<void> | undefined;
  // Keep-alive answers on one stream come back in request order, per lease.
  readonly #inFlight = new Map<string, number[]>();
  readonly #pending = new Set<string>();
  readonly #stallMs: number;
  // Keep-alives written and not yet answered on the current stream, and since when the
  // stream has made no progress while some were waiting (see #checkStall).
  #outstanding = 0;
  #waitingSince = 0;
  #stallCheck: NodeJS.Immediate | undefined;
  #stalls = 0;
  #closed = false;

  /**
   * @param options.stallMs - a stream that answers nothing for this long while keep-alives
   *   wait is replaced (default 1000 ms). A half-open connection to a partitioned etcd member
   *   accepts writes and never answers, and grpc-js' own keep-alive takes 15 s to notice it:
   *   longer than any of our TTLs. A new stream goes to a host etcd3 picks at random, whose
   *   circuit breaker has usually opened by then (our unary calls to it time out).
   */
  constructor(
    client: Etcd3,
    log: Logger,
    onAck: (ack: LeaseAck) => void,
    options: { stallMs?: number } = {},
  ) {
    this.#client = client;
    this.#leases = rawLeaseClient(client);
    this.#log = log;
    this.#onAck = onAck;
    this.#stallMs = options.stallMs ?? 1000;
  }

  /** Streams replaced because they stopped answering (see the constructor's `stallMs`). */
  get stalls(): number {
    return this.#stalls;
  }

  /** Grants a lease; resolves with its id and the time the grant request was sent. */
  async grant(ttlSec: number): Promise<{ leaseId: string; sentAt: number }> {
    const sentAt = performance.now();
    const res = await this.#leases.leaseGrant({ TTL: ttlSec });
    return { leaseId: res.ID, sentAt };
  }

  /**
   * Revokes a lease (its keys go with it) through every endpoint at once (see
   * `revokeEverywhere`: whoever waits for the keys to go should not wait for one member cut
   * off from the others). A lease already gone is not an error.
   */
  async revoke(leaseId: string): Promise<void> {
    this.#inFlight.delete(leaseId);
    await revokeEverywhere(this.#client, leaseId);
  }

  /** Forgets a lease's pending answers (after the owner stops caring about it). */
  forget(leaseId: string): void {
    this.#inFlight.delete(leaseId);
    this.#pending.delete(leaseId);
  }

  /** Sends one keep-alive for `leaseId` (opening the stream if needed). Never throws. */
  keepAlive(leaseId: string): void {
    if (this.#closed) return;
    const stream = this.#stream;
    if (stream === undefined) {
      // Sent as soon as the stream is open: dropping it would let an adopted lease run out.
      this.#pending.add(leaseId);
      void this.#open();
      return;
    }
    const now = performance.now();
    if (this.#outstanding > 0 && now - this.#waitingSince > this.#stallMs) this.#checkStall(stream);
    let q = this.#inFlight.get(leaseId);
    if (q === undefined) {
      q = [];
      this.#inFlight.set(leaseId, q);
    }
    // Bound the queue: answers lost with a broken stream must not accumulate.
    if (q.length > 16) q.shift();
    q.push(now);
    if (this.#outstanding === 0) this.#waitingSince = now;
    this.#outstanding += 1;
    try {
      stream.write({ ID: leaseId });
    } catch (e) {
      this.#log.warn({ event: "lease_keepalive_write_failed", err: String(e) });
      this.#reset();
    }
  }

  #open(): Promise<void> {
    if (this.#opening !== undefined) return this.#opening;
    this.#opening = (async () => {
      try {
        const { stream, host } = await openLeaseKeepAlive(this.#client, this.#avoidHost);
        if (this.#closed) {
          stream.end();
          return;
        }
        stream.on("data", (res) => {
          if (this.#stream === stream) this.#answer(res);
        });
        stream.on("error", (err) => {
          this.#log.warn({ event: "lease_keepalive_stream_error", err: err.message });
          if (this.#stream === stream) this.#reset();
        });
        stream.on("end", () => {
          if (this.#stream === stream) this.#reset();
        });
        this.#stream = stream;
        this.#streamHost = host;
        const pending = [...this.#pending];
        this.#pending.clear();
        for (const id of pending) this.keepAlive(id);
      } catch (e) {
        this.#log.warn({ event: "lease_keepalive_open_failed", err: String(e) });
      } finally {
        this.#opening = undefined;
      }
    })();
    return this.#opening;
  }

  /**
   * The stream looked stalled from a timer; answers may still be waiting in the socket when
   * the event loop was busy (timers run before I/O), so look again after the I/O phase and
   * replace the stream only if it still has not answered.
   */
  #checkStall(stream: LeaseKeepAliveStream): void {
    if (this.#stallCheck !== undefined) return;
    this.#stallCheck = setImmediate(() => {
      this.#stallCheck = undefined;
      const silentMs = performance.now() - this.#waitingSince;
      if (this.#closed || this.#stream !== stream || this.#outstanding === 0 || silentMs <= this.#stallMs)
        return;
      this.#log.warn({
        event: "lease_keepalive_stalled",
        silentMs: Math.round(silentMs),
        waiting: this.#outstanding,
      });
      this.#stalls += 1;
      const ids = [...this.#inFlight.keys()];
      this.#avoidHost = this.#streamHost;
      this.#reset();
      // Re-send on the next stream at once: these leases have waited long enough already.
      for (const id of ids) this.keepAlive(id);
    });
  }

  #answer(res: ILeaseKeepAliveResponse): void {
    this.#outstanding = Math.max(0, this.#outstanding - 1);
    this.#waitingSince = performance.now();
    const q = this.#inFlight.get(res.ID);
    const sentAt = q?.shift();
    if (sentAt === undefined) return;
    this.#onAck({ leaseId: res.ID, ttlSec: Number(res.TTL), sentAt });
  }

  #reset(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    this.#inFlight.clear();
    this.#outstanding = 0;
    try {
      stream?.end();
    } catch {
      // already broken
    }
  }

  /** Ends the stream. Leases are left to their TTL (revoke them first to end them now). */
  close(): void {
    this.#closed = true;
    if (this.#stallCheck !== undefined) clearImmediate(this.#stallCheck);
    this.#stallCheck = undefined;
    this.#reset();
  }
}
