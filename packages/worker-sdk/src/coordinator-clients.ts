import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ShardService } from "@org/proto";
import { GuardedSessionManager } from "./guarded-session-manager.js";
import { plaintextTransport, type ResolvedTransportSecurity } from "./transport-security.js";

/**
 * One gRPC client per coordinator replica, each over its own HTTP/2 connection (connect-node's
 * gRPC transport, guarded: see {@link GuardedSessionManager}), kept for the worker's life: the
 * session and data fetches share it.
 */
export class CoordinatorClients {
  readonly #pingIntervalMs: number;
  readonly #entries = new Map<
    string,
    { manager: GuardedSessionManager; client: Client<typeof ShardService> }
  >();

  readonly #security: ResolvedTransportSecurity;

  constructor(pingIntervalMs: number, security: ResolvedTransportSecurity = plaintextTransport) {
    this.#pingIntervalMs = pingIntervalMs;
    this.#security = security;
  }

  /** The client of `target` (`host:port`), created on first use. */
  client(target: string): Client<typeof ShardService> {
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
      const transport = createGrpcTransport({
        baseUrl,
        sessionManager: manager,
        interceptors: this.#security.interceptors,
      });
      entry = { manager, client: createClient(ShardService, transport) };
      this.#entries.set(target, entry);
    }
    return entry.client;
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
