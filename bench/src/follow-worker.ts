import { status } from "@grpc/grpc-js";
import { type Assignment, AssignmentPhase } from "@org/proto";
import { backoffDelay } from "@org/worker-sdk";
import { type BenchChannel, type BenchStream, grpcChannel } from "./transport.js";
import { encodeWorker } from "./wire.js";

/** Wall-clock milliseconds with sub-ms resolution, comparable across processes on one host. */
export const wallNow = (): number => performance.timeOrigin + performance.now();

/** Channels of one bucket of workers, one per replica address (opened lazily). */
export class ChannelPool {
  readonly #channels = new Map<string, BenchChannel>();
  get(address: string): BenchChannel {
    let c = this.#channels.get(address);
    if (c === undefined) {
      c = grpcChannel(address);
      this.#channels.set(address, c);
    }
    return c;
  }
  close(): void {
    for (const c of this.#channels.values()) c.close();
  }
}

const view = (a: Assignment | undefined) => ({
  version: Number(a?.version ?? 0n),
  phase:
    a?.phase === AssignmentPhase.ACTIVE
      ? "active"
      : a?.phase === AssignmentPhase.PENDING
        ? "pending"
        : "none",
  total: a?.totalShards ?? 0,
  shards: a?.shards ?? [],
});

/**
 * A minimal raw worker that does what the SDK does on the wire, and reports every step:
 * Hello (with the previous session token, to resume without a version bump), heartbeats at
 * the interval Welcome names, Release on every pending version, and "reconnect to whoever
 * leads": a refusal's `x-shard-leader` is followed at once; with no hint the next replica
 * is tried after a full-jitter exponential backoff (base 50 ms, cap 1 s, like the SDK).
 */
export class FollowWorker {
  readonly #nodeId: string;
  readonly #group: string;
  readonly #targets: readonly string[];
  readonly #pool: ChannelPool;
  readonly #emit: (m: object) => void;
  #target: number;
  #next: string | undefined;
  #token = "";
  #lastVersion = 0n;
  #attempt = 0;
  #stream: BenchStream | undefined;
  #hb: NodeJS.Timeout | undefined;
  #seq = 0n;
  #stopped = false;

  constructor(
    nodeId: string,
    group: string,
    targets: readonly string[],
    pool: ChannelPool,
    emit: (m: object) => void,
  ) {
    this.#nodeId = nodeId;
    this.#group = group;
    this.#targets = targets;
    this.#pool = pool;
    this.#emit = emit;
    this.#target = Math.floor(Math.random() * targets.length);
  }

  start(): void {
    const address = this.#next ?? this.#targets[this.#target % this.#targets.length] ?? "";
    this.#next = undefined;
    this.#seq = 0n;
    let welcomed = false;
    const stream = this.#pool.get(address).open({
      onMessage: (m) => {
        const k = m.kind;
        if (k.case === "welcome") {
          welcomed = true;
          this.#attempt = 0;
          this.#token = k.value.sessionToken;
          const v = view(k.value.assignment);
          if (k.value.assignment !== undefined) this.#lastVersion = k.value.assignment.version;
          this.#emit({
            t: "welcome",
            node: this.#nodeId,
            at: wallNow(),
            address,
            resumed: k.value.resumed,
            ...v,
          });
          this.#heartbeat();
          this.#hb = setInterval(() => this.#heartbeat(), k.value.heartbeatIntervalMs || 1000);
          if (v.phase === "pending") this.#release(k.value.assignment?.version ?? 0n);
        } else if (k.case === "assignment") {
          this.#lastVersion = k.value.version;
          const v = view(k.value);
          this.#emit({ t: "assignment", node: this.#nodeId, at: wallNow(), ...v });
          // The leader ignores a Release from a node it does not wait for, so always sending
          // one is both correct and simplest (this worker stops its lost shards instantly).
          if (v.phase === "pending") this.#release(k.value.version);
        }
      },
      onEnd: (e) => {
        clearInterval(this.#hb);
        this.#stream = undefined;
        if (this.#stopped) return;
        this.#emit({ t: "end", node: this.#nodeId, at: wallNow(), code: e.code, leader: e.leader, welcomed });
        if (e.code === status.UNAVAILABLE && e.leader !== "" && e.leader !== address) {
          this.#next = e.leader;
          setTimeout(() => this.start(), 0);
          return;
        }
        this.#target++;
        this.#attempt++;
        const delay = backoffDelay(this.#attempt); // the SDK's own formula and defaults
        setTimeout(() => this.start(), delay);
      },
    });
    this.#stream = stream;
    this.#send({
      case: "hello",
      value: {
        group: this.#group,
        nodeId: this.#nodeId,
        sessionToken: this.#token,
        capacity: 1,
        lastKnownVersion: this.#lastVersion,
        clientVersion: "bench-follow",
      },
    });
  }

  #send(kind: Parameters<typeof encodeWorker>[0]["kind"]): void {
    this.#seq += 1n;
    this.#stream?.write(encodeWorker({ seq: this.#seq, kind }));
  }

  #heartbeat(): void {
    this.#send({ case: "heartbeat", value: { nodeId: this.#nodeId, ts: BigInt(Date.now()) } });
  }

  #release(version: bigint): void {
    this.#send({ case: "release", value: { version } });
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#hb);
    this.#stream?.cancel();
  }
}
