import {
  type Etcd3,
  EtcdLeaseInvalidError,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
  type LeaseClient,
} from "etcd3";
import type { Logger } from "pino";
import { rawLeaseClient } from "../store/etcd-client.js";

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
  readonly #leases: LeaseClient;
  readonly #log: Logger;
  readonly #onAck: (ack: LeaseAck) => void;
  #stream: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | undefined;
  #opening: Promise<void> | undefined;
  // Keep-alive answers on one stream come back in request order, per lease.
  readonly #inFlight = new Map<string, number[]>();
  readonly #pending = new Set<string>();
  #closed = false;

  constructor(client: Etcd3, log: Logger, onAck: (ack: LeaseAck) => void) {
    this.#leases = rawLeaseClient(client);
    this.#log = log;
    this.#onAck = onAck;
  }

  /** Grants a lease; resolves with its id and the time the grant request was sent. */
  async grant(ttlSec: number): Promise<{ leaseId: string; sentAt: number }> {
    const sentAt = performance.now();
    const res = await this.#leases.leaseGrant({ TTL: ttlSec });
    return { leaseId: res.ID, sentAt };
  }

  /** Revokes a lease (its keys go with it). A lease already gone is not an error. */
  async revoke(leaseId: string): Promise<void> {
    this.#inFlight.delete(leaseId);
    try {
      await this.#leases.leaseRevoke({ ID: leaseId });
    } catch (e) {
      // etcd3 maps etcd's "requested lease not found" to this class.
      if (!(e instanceof EtcdLeaseInvalidError)) throw e;
    }
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
    let q = this.#inFlight.get(leaseId);
    if (q === undefined) {
      q = [];
      this.#inFlight.set(leaseId, q);
    }
    // Bound the queue: answers lost with a broken stream must not accumulate.
    if (q.length > 16) q.shift();
    q.push(performance.now());
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
        const stream = await this.#leases.leaseKeepAlive();
        if (this.#closed) {
          stream.end();
          return;
        }
        stream.on("data", (res) => this.#answer(res));
        stream.on("error", (err) => {
          this.#log.warn({ event: "lease_keepalive_stream_error", err: err.message });
          if (this.#stream === stream) this.#reset();
        });
        stream.on("end", () => {
          if (this.#stream === stream) this.#reset();
        });
        this.#stream = stream;
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

  #answer(res: ILeaseKeepAliveResponse): void {
    const q = this.#inFlight.get(res.ID);
    const sentAt = q?.shift();
    if (sentAt === undefined) return;
    this.#onAck({ leaseId: res.ID, ttlSec: Number(res.TTL), sentAt });
  }

  #reset(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    this.#inFlight.clear();
    try {
      stream?.end();
    } catch {
      // already broken
    }
  }

  /** Ends the stream. Leases are left to their TTL (revoke them first to end them now). */
  close(): void {
    this.#closed = true;
    this.#reset();
  }
}
