import { createServer, type Server } from "node:net";

/** The only interface the harness listens on or points etcd at. */
export const LOOPBACK_HOST = "127.0.0.1";

/**
 * Returns `count` distinct TCP ports that were free on `host` a moment ago.
 *
 * All probe sockets are held open together so the kernel cannot hand the same
 * port out twice within one call. The ports are released before returning, so
 * another process may still take one before the caller binds it: callers must
 * be ready to retry on `EADDRINUSE`.
 */
export async function getFreePorts(count: number, host: string = LOOPBACK_HOST): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(await listenOnEphemeralPort(server, host));
    }
    return ports;
  } finally {
    await Promise.all(servers.map(closeServer));
  }
}

/** Returns one TCP port that was free on `host` a moment ago; see {@link getFreePorts}. */
export async function getFreePort(host: string = LOOPBACK_HOST): Promise<number> {
  const [port] = await getFreePorts(1, host);
  if (port === undefined) throw new Error("unreachable: getFreePorts(1) returned no port");
  return port;
}

/** True when `error` is a Node system error for an address that is already bound. */
export function isAddressInUseError(error: unknown): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === "EADDRINUSE";
}

function listenOnEphemeralPort(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      server.off("error", reject);
      const address = server.address();
      if (address === null || typeof address === "string") {
        reject(new Error(`unexpected listen address ${String(address)}`));
        return;
      }
      resolve(address.port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}
