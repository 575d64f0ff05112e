import { createConnection, createServer, type Socket } from "node:net";
import { LOOPBACK_HOST } from "./free-port.js";

/** A TCP relay that counts the bytes each way (what a call really puts on the wire). */
export interface CountingProxy {
  readonly port: number;
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  /** Bytes relayed from the target to clients, and from clients to the target, since `reset()`. */
  readonly bytes: { toClient: number; toServer: number };
  reset(): void;
  close(): Promise<void>;
}

/**
 * Relays every connection on a free loopback port to `target`, counting bytes (TLS-free
 * HTTP/2: frames, headers and payloads, exactly what the network would carry).
 *
 * @example
 * ```ts
 * const proxy = await startCountingProxy({ host: "127.0.0.1", port: 50051 });
 * // ... run calls against proxy.address ...
 * console.log(proxy.bytes.toClient);
 * await proxy.close();
 * ```
 */
export async function startCountingProxy(target: { host: string; port: number }): Promise<CountingProxy> {
  const bytes = { toClient: 0, toServer: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = createConnection(target);
    // No Nagle on either leg: a relayed WINDOW_UPDATE or PING must not wait for a delayed ACK
    // (40 ms on Linux), which would throttle the very stream being measured.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (b: Buffer) => {
      bytes.toServer += b.length;
    });
    upstream.on("data", (b: Buffer) => {
      bytes.toClient += b.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK_HOST, resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    port,
    address: `${LOOPBACK_HOST}:${port}`,
    bytes,
    reset() {
      bytes.toClient = 0;
      bytes.toServer = 0;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
