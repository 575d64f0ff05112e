import { createServer, type Server, type Socket } from "node:net";
import { LOOPBACK_HOST } from "./free-port.js";
import { ProxyLink, type ProxyTarget } from "./proxy-link.js";

/** Options of {@link startTcpProxy}. */
export interface TcpProxyOptions {
  /** Where connections are forwarded, e.g. an etcd member's client port. */
  readonly target: ProxyTarget;
  /** Loopback port to listen on; 0 (the default) picks a free one. */
  readonly listenPort?: number;
}

/** Current fault mode of a {@link TcpProxy}. */
export type TcpProxyMode = "open" | "severed" | "blackholed" | "closed";

/**
 * A loopback TCP proxy in front of one target, to partition one client (whoever
 * is given the proxy's address) from that target while everyone else keeps a
 * direct path.
 */
export interface TcpProxy extends AsyncDisposable {
  /** Port the proxy listens on (on 127.0.0.1). */
  readonly port: number;
  /** `127.0.0.1:<port>`, for clients that take host:port. */
  readonly address: string;
  /** `http://127.0.0.1:<port>`, e.g. for `new Etcd3({ hosts: proxy.url })`. */
  readonly url: string;
  readonly mode: TcpProxyMode;
  /** Client connections currently relayed (or held). */
  readonly connectionCount: number;
  /**
   * Cut the link: reset every current connection and reset new ones as soon as they
   * are accepted, until `restore()`. Clients see errors right away, as when a peer
   * crashes or a firewall rejects.
   */
  sever(): void;
  /**
   * Silence the link: connections stay open and new ones are accepted, but no byte
   * gets through in either direction until `restore()`. Clients see no error, only
   * silence, as in a network partition where packets vanish; they must notice
   * through their own deadlines and keep-alives.
   *
   * Withheld bytes are queued rather than discarded and delivered on `restore()`,
   * as TCP retransmission would after a real partition heals; discarding them would
   * corrupt framed streams such as HTTP/2 instead of modelling packet loss.
   */
  blackhole(): void;
  /** Back to relaying normally. Connections severed meanwhile stay closed. */
  restore(): void;
  /**
   * A one-shot lost answer: the first time a client sends bytes containing `marker`
   * (plain bytes of a request, such as a value it writes), that connection's replies are
   * withheld for `holdMs` and then delivered. The request reaches the target and takes
   * effect; the client sees nothing until its own deadline. Resolves when it fired.
   */
  holdReplyTo(marker: string | Buffer, holdMs: number): Promise<void>;
  /** Stop listening and close every connection. Safe to call more than once. */
  close(): Promise<void>;
  /** Same as `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a {@link TcpProxy} listening on 127.0.0.1. */
export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  return LoopbackTcpProxy.start(options);
}

class LoopbackTcpProxy implements TcpProxy {
  readonly #server: Server;
  readonly #target: ProxyTarget;
  readonly #links = new Set<ProxyLink>();
  #port = 0;
  #mode: TcpProxyMode = "open";
  #closing: Promise<void> | undefined;
  #armed: { marker: Buffer; holdMs: number; fired: () => void } | undefined;
  // The last bytes each client sent, so a marker split across two chunks is still seen.
  readonly #tails = new WeakMap<ProxyLink, Buffer>();

  private constructor(server: Server, target: ProxyTarget) {
    this.#server = server;
    this.#target = target;
  }

  static async start(options: TcpProxyOptions): Promise<LoopbackTcpProxy> {
    // pauseOnConnect: nothing is read from a client before its link decides where
    // the bytes go; allowHalfOpen: a client's FIN is forwarded, not answered by us.
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true });
    const proxy = new LoopbackTcpProxy(server, { ...options.target });
    server.on("connection", (socket) => proxy.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port: options.listenPort ?? 0, host: LOOPBACK_HOST }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === "string") {
      server.close();
      throw new Error(`unexpected proxy listen address ${String(address)}`);
    }
    proxy.#port = address.port;
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  get address(): string {
    return `${LOOPBACK_HOST}:${this.#port}`;
  }

  get url(): string {
    return `http://${this.address}`;
  }

  get mode(): TcpProxyMode {
    return this.#mode;
  }

  get connectionCount(): number {
    return this.#links.size;
  }

  sever(): void {
    if (this.#mode === "closed") return;
    this.#mode = "severed";
    for (const link of [...this.#links]) link.destroy(true);
  }

  blackhole(): void {
    if (this.#mode === "closed") return;
    this.#mode = "blackholed";
    for (const link of this.#links) link.hold();
  }

  restore(): void {
    if (this.#mode === "closed") return;
    this.#mode = "open";
    for (const link of this.#links) link.release();
  }

  holdReplyTo(marker: string | Buffer, holdMs: number): Promise<void> {
    return new Promise((fired) => {
      this.#armed = { marker: Buffer.from(marker), holdMs, fired };
    });
  }

  close(): Promise<void> {
    this.#closing ??= new Promise((resolve) => {
      this.#mode = "closed";
      this.#server.close(() => resolve());
      for (const link of [...this.#links]) link.destroy();
    });
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #inspect(link: ProxyLink, chunk: Buffer): void {
    const armed = this.#armed;
    if (armed === undefined) return;
    const seen = Buffer.concat([this.#tails.get(link) ?? Buffer.alloc(0), chunk]);
    if (seen.includes(armed.marker)) {
      this.#armed = undefined;
      link.holdReplies(armed.holdMs);
      armed.fired();
      return;
    }
    this.#tails.set(link, seen.subarray(Math.max(0, seen.length - armed.marker.length + 1)));
  }

  #accept(socket: Socket): void {
    if (this.#mode === "severed" || this.#mode === "closed") {
      socket.on("error", () => undefined);
      socket.resetAndDestroy();
      return;
    }
    const link = ProxyLink.open(socket, this.#target, {
      held: this.#mode === "blackholed",
      onClosed: () => this.#links.delete(link),
      onClientData: (l, chunk) => this.#inspect(l, chunk),
    });
    this.#links.add(link);
  }
}
