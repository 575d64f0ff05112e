import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ShardService } from "@org/proto";

/**
 * One gRPC client per coordinator replica, each over its own HTTP/2 connection (connect-node's
 * gRPC transport), kept for the worker's life: the session and data fetches share it.
 */
export class CoordinatorClients {
  readonly #pingIntervalMs: number;
  readonly #entries = new Map<
    string,
    { manager: Http2SessionManager; client: Client<typeof ShardService> }
  >();

  constructor(pingIntervalMs: number) {
    this.#pingIntervalMs = pingIntervalMs;
  }

  /** The client of `target` (`host:port`), created on first use. */
  client(target: string): Client<typeof ShardService> {
    let entry = this.#entries.get(target);
    if (entry === undefined) {
      const baseUrl = `http://${target}`;
      const manager = new Http2SessionManager(baseUrl, {
        pingIntervalMs: this.#pingIntervalMs,
        pingTimeoutMs: Math.max(2000, this.#pingIntervalMs / 2),
        pingIdleConnection: true,
        idleConnectionTimeoutMs: 60_000,
      });
      const transport = createGrpcTransport({ baseUrl, sessionManager: manager });
      entry = { manager, client: createClient(ShardService, transport) };
      this.#entries.set(target, entry);
    }
    return entry.client;
  }

  /** Closes every connection (and the streams on it). */
  close(): void {
    for (const { manager } of this.#entries.values()) manager.abort();
    this.#entries.clear();
  }
}
