import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ShardService } from "@org/proto";
import { type DataCompression, dataTransportCompression } from "./compression.js";
import { GuardedSessionManager } from "./guarded-session-manager.js";
import { plaintextTransport, type ResolvedTransportSecurity } from "./transport-security.js";

interface Entry {
  readonly manager: GuardedSessionManager;
  readonly client: Client<typeof ShardService>;
  /** Same connection, with the worker's data compression (the same client when none). */
  readonly data: Client<typeof ShardService>;
}

/**
 * One gRPC client per coordinator replica, each over its own HTTP/2 connection (connect-node's
 * gRPC transport, guarded: see {@link GuardedSessionManager}), kept for the worker's life: the
 * session and data fetches share it.
 */
export class CoordinatorClients {
  readonly #pingIntervalMs: number;
  readonly #security: ResolvedTransportSecurity;
  readonly #compression: DataCompression;
  readonly #entries = new Map<string, Entry>();

  constructor(
    pingIntervalMs: number,
    security: ResolvedTransportSecurity = plaintextTransport,
    compression: DataCompression = "none",
  ) {
    this.#pingIntervalMs = pingIntervalMs;
    this.#security = security;
    this.#compression = compression;
  }

  /** The client of `target` (`host:port`), created on first use. */
  client(target: string): Client<typeof ShardService> {
    return this.#entry(target).client;
  }

  /**
   * The client for data calls to `target`: the same connection, with the worker's
   * `compression` (a transport of its own, so heartbeats never carry a `grpc-encoding`).
   */
  dataClient(target: string): Client<typeof ShardService> {
    return this.#entry(target).data;
  }

  #entry(target: string): Entry {
    let entry = this.#entries.get(target);
    if (entry === undefined) {
      const baseUrl = `${this.#security.scheme}://${target}`;
      const manager = new GuardedSessionManager(
        baseUrl,
        {
          pingIntervalMs: this.#pingIntervalMs,
          pingTimeoutMs: Math.max(2000, this.#pingIntervalMs / 2),
          pingIdleConnection: true,
          idleConnectionTimeoutMs: 60_000,
        },
        this.#security.sessionOptions,
      );
      const common = { baseUrl, sessionManager: manager, interceptors: this.#security.interceptors };
      const client = createClient(ShardService, createGrpcTransport(common));
      const data =
        this.#compression === "none"
          ? client
          : createClient(
              ShardService,
              createGrpcTransport({ ...common, ...dataTransportCompression(this.#compression) }),
            );
      entry = { manager, client, data };
      this.#entries.set(target, entry);
    }
    return entry;
  }

  /** Drops the connection to `target` (and its streams): the next call opens a fresh one. */
  reset(target: string): void {
    this.#entries.get(target)?.manager.abort();
    this.#entries.delete(target);
  }

  /** Closes every connection (and the streams on it). */
  close(): void {
    for (const { manager } of this.#entries.values()) manager.abort();
    this.#entries.clear();
  }
}
