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
  /** Sees every chunk the client sends, before it is relayed to the target. */
  readonly onClientData?: (link: ProxyLink, chunk: Buffer) => void;
}

/**
 * One client connection relayed to the target, byte for byte, with a switch to
 * withhold traffic. Owns both sockets: when either side goes away, both do.
 */
export class ProxyLink {
  readonly #client: Socket;
  readonly #target: ProxyTarget;
  readonly #onClosed: () => void;
  readonly #onClientData: ((link: ProxyLink, chunk: Buffer) => void) | undefined;
  #upstream: Socket | undefined;
  #pumps: Pump[] = [];
  #held = false;
  // Replies (target -> client) withheld until this timer fires; see holdReplies().
  #replyHold: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(client: Socket, target: ProxyTarget, options: ProxyLinkOptions) {
    this.#client = client;
    this.#target = target;
    this.#onClosed = options.onClosed;
    this.#onClientData = options.onClientData;
  }

  /**
   * Takes over an accepted client socket (which must not be reading yet, e.g. from a
   * server with `pauseOnConnect`) and connects it to the target unless `held`.
   */
  static open(client: Socket, target: ProxyTarget, options: ProxyLinkOptions): ProxyLink {
    const link = new ProxyLink(client, target, options);
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
    this.#pumps[0]?.resume();
    if (this.#replyHold === undefined) this.#pumps[1]?.resume();
  }

  /**
   * Withhold the target's replies for `ms`, then deliver them in order; the client's
   * requests keep flowing. Called from `onClientData`, it catches the reply to the chunk
   * being relayed: the request takes effect at the target, and the client sees only
   * silence until its own deadline, as when an answer is lost on the way back.
   */
  holdReplies(ms: number): void {
    if (this.#closed) return;
    clearTimeout(this.#replyHold);
    this.#pumps[1]?.pause();
    this.#replyHold = setTimeout(() => {
      this.#replyHold = undefined;
      if (!this.#held && !this.#closed) this.#pumps[1]?.resume();
    }, ms);
  }

  /** Close both sides; with `reset`, with a TCP RST (the peer sees ECONNRESET) instead of a FIN. */
  destroy(reset = false): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#replyHold);
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
    const tap = this.#onClientData;
    this.#pumps = [
      Pump.start(this.#client, upstream, tap === undefined ? undefined : (chunk) => tap(this, chunk)),
      Pump.start(upstream, this.#client),
    ];
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

  /** Starts relaying `from` → `to` right away; `tap` sees each chunk before it is written. */
  static start(from: Socket, to: Socket, tap?: (chunk: Buffer) => void): Pump {
    const pump = new Pump(from);
    from.on("data", (chunk: Buffer) => {
      tap?.(chunk);
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
