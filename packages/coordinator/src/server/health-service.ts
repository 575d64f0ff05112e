import type { Server } from "@grpc/grpc-js";
import { shardServiceName, taskServiceName } from "@org/proto";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";

/** What decides the replica's health: its role and whether etcd answers. */
export interface HealthInputs {
  /** `starting` and `stopped` serve nothing; `follower` is alive; `leader` serves the services. */
  readonly role: "starting" | "follower" | "leader" | "stopped";
  /** Whether the replica's etcd calls are answered (see `EtcdHealth.state`). */
  readonly etcdConnected: boolean;
}

/** The services whose status names the leader (workers and task clients call them there). */
export const leaderServices: readonly string[] = [shardServiceName, taskServiceName];

/**
 * The statuses {@link ReplicaHealthService} reports for `inputs`: the overall service `""`
 * is SERVING while the replica runs (follower or leader) and reaches etcd, so a probe tells a
 * live replica from a dead or cut-off one; `shard.v1.ShardService` and `shard.v1.TaskService`
 * are SERVING only on the leader (and only while it reaches etcd), so a load balancer or
 * `grpc_health_probe -service shard.v1.ShardService` finds the leader.
 */
export function healthStatuses(inputs: HealthInputs): Record<string, ServingStatus> {
  const alive = (inputs.role === "follower" || inputs.role === "leader") && inputs.etcdConnected;
  const leading = alive && inputs.role === "leader";
  const out: Record<string, ServingStatus> = { "": alive ? "SERVING" : "NOT_SERVING" };
  for (const s of leaderServices) out[s] = leading ? "SERVING" : "NOT_SERVING";
  return out;
}

/**
 * `grpc.health.v1.Health` (Check, Watch, List) on the replica's gRPC server, implemented by
 * grpc-health-check's `HealthImplementation`
 * ({@link https://github.com/grpc/grpc/blob/master/doc/health-checking.md | the protocol}).
 * The replica calls {@link ReplicaHealthService.update} at each change of role or etcd
 * state; `Watch` streams receive only real changes (the implementation sends on every
 * `setStatus`, so unchanged statuses are not set again).
 *
 * @example
 * ```ts
 * const health = new ReplicaHealthService();
 * health.addToServer(server);
 * health.update({ role: "leader", etcdConnected: true });
 * ```
 */
export class ReplicaHealthService {
  readonly #impl: HealthImplementation;
  #current: Record<string, ServingStatus>;

  constructor() {
    this.#current = healthStatuses({ role: "starting", etcdConnected: false });
    this.#impl = new HealthImplementation({ ...this.#current });
  }

  /** Registers the Health service on `server` (before it binds). */
  addToServer(server: Server): void {
    this.#impl.addToServer(server);
  }

  /** The statuses now reported, by service name (`""` is the server as a whole). */
  get statuses(): Readonly<Record<string, ServingStatus>> {
    return this.#current;
  }

  /** Recomputes the statuses from `inputs`; watchers see only the ones that changed. */
  update(inputs: HealthInputs): void {
    const next = healthStatuses(inputs);
    for (const [service, status] of Object.entries(next)) {
      if (this.#current[service] !== status) this.#impl.setStatus(service, status);
    }
    this.#current = next;
  }
}
