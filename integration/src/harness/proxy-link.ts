import { connect, type Socket } from "node:net";

/** Where a proxy forwards connections to. */
export interface ProxyTarget {
  readonly host: string;
  readonly port: number;
}

/** Options of {@link ProxyLink.open}. */
export interface ProxyLinkOptions {
  /** Start held (see {@link ProxyLink.hold}): accept the client but do not reach the target yet. */
  readonly held: boolean;
  /** Called once when either side closes and the link is torn down. */
  readonly onClosed: () => void;
}

/**
 * One client connection relayed to the target, byte for byte, with a switch to
 * withhold traffic. Owns both sockets: when either side goes away, both do.
 */
export class ProxyLink {
  readonly #client: Socket;
  readonly #target: ProxyTarget;
  readonly #onClosed: () => void;
  #upstream: Socket | undefined;
  #pumps: Pump[] = [];
  #held = false;
  #closed = false;

  private constructor(client: Socket, target: ProxyTarget, onClosed: () => void) {
    this.#client = client;
    this.#target = target;
    this.#onClosed = onClosed;
  }

  /**
   * Takes over an accepted client socket (which must not be reading yet, e.g. from a
   * server with `pauseOnConnect`) and connects it to the target unless `held`.
   */
  static open(client: Socket, target: ProxyTarget, options: ProxyLinkOptions): ProxyLink {
    const link = new ProxyLink(client, target, options.onClosed);
    link.#watch(client);
    link.#held = options.held;
    if (!options.held) link.#connectUpstream();
    return link;
  }

  /**
   * Stop relaying in both directions without closing anything. Bytes stay queued
   * in socket buffers, so neither side receives anything nor sees an error; TCP
   * flow control pushes back on a sender that keeps writing.
   */
  hold(): void {
    if (this.#closed) return;
    this.#held = true;
    for (const pump of this.#pumps) pump.pause();
  }

  /** Resume relaying; what was withheld is delivered in order. */
  release(): void {
    if (this.#closed || !this.#held) return;
    this.#held = false;
    if (this.#upstream === undefined) {
      this.#connectUpstream();
      return;
    }
    for (const pump of this.#pumps) pump.resume();
  }

  /** Close both sides; with `reset`, with a TCP RST (the peer sees ECONNRESET) instead of a FIN. */
  destroy(reset = false): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const socket of [this.#client, this.#upstream]) {
      if (socket === undefined || socket.destroyed) continue;
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
    }
    this.#onClosed();
  }

  #connectUpstream(): void {
    const upstream = connect({ host: this.#target.host, port: this.#target.port, allowHalfOpen: true });
    this.#upstream = upstream;
    this.#watch(upstream);
    this.#pumps = [Pump.start(this.#client, upstream), Pump.start(upstream, this.#client)];
  }

  #watch(socket: Socket): void {
    // Errors (resets, refused upstream) just end the link; the other side sees it close.
    socket.on("error", () => this.destroy());
    socket.on("close", () => this.destroy());
  }
}

/** Relays one direction of a link, honouring back-pressure from the receiving side. */
class Pump {
  readonly #from: Socket;
  #paused = false;
  #awaitingDrain = false;

  private constructor(from: Socket) {
    this.#from = from;
  }

  /** Starts relaying `from` → `to` right away. */
  static start(from: Socket, to: Socket): Pump {
    const pump = new Pump(from);
    from.on("data", (chunk: Buffer) => {
      if (to.write(chunk)) return;
      pump.#awaitingDrain = true;
      from.pause();
      to.once("drain", () => {
        pump.#awaitingDrain = false;
        if (!pump.#paused) from.resume();
      });
    });
    // Links are half-open capable: forward a FIN as a FIN so request/response
    // protocols that close their sending side still get their answer.
    from.on("end", () => to.end());
    // Sockets accepted with pauseOnConnect do not start flowing just because a
    // "data" listener was added.
    from.resume();
    return pump;
  }

  pause(): void {
    this.#paused = true;
    this.#from.pause();
  }

  resume(): void {
    this.#paused = false;
    if (!this.#awaitingDrain) this.#from.resume();
  }
}
