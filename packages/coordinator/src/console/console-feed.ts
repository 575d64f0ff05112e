import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "pino";
import { sleep } from "../store/backoff.js";
import { consoleGroup, runningOwners } from "./console-group.js";
import type { ConsoleReplica, ConsoleView } from "./console-view.js";
import { OwnershipTimeline } from "./ownership-timeline.js";
import { type ReplicaHttpAuth, replicaRequest, sseData } from "./replica-http.js";

/** What the feed reads from its replica (implemented by `Replica`). */
export interface ConsoleSource {
  readonly id: string;
  /** Present while this replica leads: see `Replica.leaderState`. */
  leaderState(): ReturnType<import("../replica/replica.js").Replica["leaderState"]>;
  /** The leader per this replica's watch, with its console address. */
  knownLeader():
    | { readonly id: string; readonly http: string | null; readonly httpTls?: boolean | undefined }
    | undefined;
  /** Every campaigning replica (an etcd read). */
  candidates(): Promise<{ id: string; address: string; http: string | null; revision: number }[]>;
}

/** Options of {@link ConsoleFeed}. */
export interface ConsoleFeedOptions {
  /** How often the leader builds and sends a view. @default 1000 */
  readonly intervalMs?: number;
  /** How far back the ownership timelines go. @default 300000 (5 minutes) */
  readonly timelineWindowMs?: number;
  /** A client whose unsent bytes pass this is dropped (it reconnects). @default 1048576 */
  readonly maxBufferedBytes?: number;
  /**
   * How a follower reaches the leader's listener: the replicas' `--http-token-file` token
   * (the leader wants it from beyond loopback) and the CA of their certificate when they
   * serve HTTPS (else the system CAs and NODE_EXTRA_CA_CERTS).
   */
  readonly relayAuth?: ReplicaHttpAuth;
  readonly log: Logger;
}

/**
 * The console's live feed (`GET /events`, Server-Sent Events, one `view` event per second).
 *
 * Design: only the leader has the live picture (members' load, last heard, handoff state,
 * tasks), so the leader builds the {@link ConsoleView}; a follower relays the leader's feed
 * (it finds the leader's HTTP address in the election value) and replaces only `servedBy`.
 * Every page therefore shows the same cluster whichever replica serves it; during a failover
 * the follower keeps its page's connection, says the feed is lost, and relays (or, elected,
 * builds) the new leader's views as soon as it knows them: no reload. Each replica keeps the
 * ownership timelines of the views it relays, so a new leader continues the old one's.
 *
 * The feed works only while someone listens: no client, no etcd read and no upstream
 * connection. `close()` ends every client response and the upstream request.
 */
export class ConsoleFeed {
  readonly #source: ConsoleSource;
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #maxBuffered: number;
  readonly #relayAuth: ReplicaHttpAuth;
  readonly #timeline: OwnershipTimeline;
  readonly #clients = new Set<ServerResponse>();
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #last: ConsoleView | undefined;
  #upstream:
    | { target: string; tls: boolean; ac: AbortController; done: Promise<void>; lastAt: number }
    | undefined;
  #closing: Promise<void> | undefined;
  /** Upstream readers not finished yet (an aborted one ends at its next await). */
  readonly #pumps = new Set<Promise<void>>();

  private constructor(source: ConsoleSource, o: ConsoleFeedOptions) {
    this.#source = source;
    this.#log = o.log;
    this.#intervalMs = o.intervalMs ?? 1000;
    this.#maxBuffered = o.maxBufferedBytes ?? 1 << 20;
    this.#relayAuth = o.relayAuth ?? {};
    this.#timeline = new OwnershipTimeline(o.timelineWindowMs ?? 300_000);
  }

  /** Starts the feed's loop (idle until a client attaches). */
  static start(source: ConsoleSource, o: ConsoleFeedOptions): ConsoleFeed {
    const f = new ConsoleFeed(source, o);
    f.#loop = f.#run();
    return f;
  }

  /** Clients connected now. */
  get clients(): number {
    return this.#clients.size;
  }

  /** Serves `GET /events` on `res`: an event stream that lasts until the client or the feed closes. */
  attach(req: IncomingMessage, res: ServerResponse): void {
    if (this.#stop.signal.aborted) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      connection: "keep-alive",
      // A page served by another replica may fall back to this one's feed.
      "access-control-allow-origin": "*",
    });
    // EventSource reconnects after this many ms when the stream breaks.
    res.write(`retry: ${this.#intervalMs}\n\n`);
    this.#clients.add(res);
    const drop = () => this.#clients.delete(res);
    req.on("close", drop);
    res.on("close", drop);
    if (this.#last !== undefined) this.#send(res, this.#last);
  }

  #send(res: ServerResponse, view: ConsoleView): void {
    if (res.writableLength > this.#maxBuffered) {
      this.#clients.delete(res);
      res.destroy();
      return;
    }
    res.write(`event: view\ndata: ${JSON.stringify({ ...view, servedBy: this.#source.id })}\n\n`);
  }

  #broadcast(view: ConsoleView): void {
    this.#last = view;
    for (const c of [...this.#clients]) this.#send(c, view);
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        await this.#tick();
      } catch (e) {
        this.#log.warn({ event: "console_tick_failed", err: String(e) });
      }
      await sleep(this.#intervalMs, signal);
    }
  }

  async #tick(): Promise<void> {
    if (this.#clients.size === 0) {
      this.#stopUpstream();
      return;
    }
    const state = this.#source.leaderState();
    if (state !== undefined) {
      this.#stopUpstream();
      this.#broadcast(await this.#build(state));
      return;
    }
    const leader = this.#source.knownLeader();
    const target = leader !== undefined && leader.id !== this.#source.id ? leader.http : null;
    if (target === null) {
      this.#stopUpstream();
      this.#problem(
        leader === undefined ? "no leader is known: an election is under way" : "the leader has no console",
      );
      return;
    }
    const tls = leader?.httpTls === true;
    if (this.#upstream?.target !== target || this.#upstream.tls !== tls) this.#startUpstream(target, tls);
    const up = this.#upstream;
    if (up !== undefined && performance.now() - up.lastAt > 2.5 * this.#intervalMs)
      this.#problem(`waiting for the leader's feed (${leader?.id} at ${target})`);
  }

  /** Re-sends the last view (or an empty one) saying why it is not live. */
  #problem(problem: string): void {
    const last = this.#last;
    this.#broadcast({
      at: Date.now(),
      builtBy: this.#source.id,
      servedBy: this.#source.id,
      leader: null,
      replicas: last?.replicas.map((r) => ({ ...r, leader: false })) ?? [],
      groups: last?.groups ?? [],
      timelineWindowMs: this.#timeline.windowMs,
      problem,
    });
  }

  async #build(state: NonNullable<ReturnType<ConsoleSource["leaderState"]>>): Promise<ConsoleView> {
    const at = Date.now();
    let replicas: ConsoleReplica[];
    try {
      const cands = await this.#source.candidates();
      replicas = cands.map((c, i) => ({ ...c, leader: i === 0 }));
    } catch {
      // etcd did not answer; the leader is still the leader until its lease says otherwise.
      replicas = this.#last?.replicas.map((r) => ({ ...r })) ?? [];
    }
    const self = replicas.find((r) => r.id === this.#source.id);
    this.#timeline.retain(new Set(state.groups.map((g) => g.snapshot.group)));
    const groups = state.groups
      .map((g) =>
        consoleGroup(
          g.snapshot,
          g.tasks,
          this.#timeline.record(g.snapshot.group, runningOwners(g.snapshot), at),
        ),
      )
      .sort((x, y) => x.group.localeCompare(y.group));
    return {
      at,
      builtBy: this.#source.id,
      servedBy: this.#source.id,
      leader: {
        id: this.#source.id,
        address: self?.address ?? "",
        epoch: state.epoch,
        since: new Date(state.since).toISOString(),
      },
      replicas,
      groups,
      timelineWindowMs: this.#timeline.windowMs,
      problem: null,
    };
  }

  #startUpstream(target: string, tls: boolean): void {
    this.#stopUpstream();
    const ac = new AbortController();
    const up = { target, tls, ac, done: Promise.resolve(), lastAt: performance.now() };
    up.done = this.#pump(up);
    this.#pumps.add(up.done);
    void up.done.finally(() => this.#pumps.delete(up.done));
    this.#upstream = up;
    this.#log.info({ event: "console_relay", leaderHttp: target, tls });
  }

  #stopUpstream(): void {
    this.#upstream?.ac.abort();
    this.#upstream = undefined;
  }

  /** Reads the leader's event stream and relays each view, reconnecting until aborted. */
  async #pump(up: { target: string; tls: boolean; ac: AbortController; lastAt: number }): Promise<void> {
    const signal = AbortSignal.any([up.ac.signal, this.#stop.signal]);
    let lastError = "";
    while (!signal.aborted) {
      try {
        const res = await replicaRequest({ http: up.target, tls: up.tls }, "/events", this.#relayAuth, {
          signal,
          accept: "text/event-stream",
          headers: { "x-console-relay": this.#source.id },
        });
        for await (const data of sseData(res)) {
          const relayed = JSON.parse(data) as ConsoleView;
          up.lastAt = performance.now();
          const view: ConsoleView = {
            ...relayed,
            groups: relayed.groups.map((g) => ({
              ...g,
              timeline: this.#timeline.adopt(g.group, g.timeline, relayed.at),
            })),
          };
          if (!signal.aborted) this.#broadcast(view);
        }
      } catch (e) {
        // The leader went away or is not serving yet: the tick reports it; retry. A refusal
        // (401, a certificate) is logged once, not at every retry.
        const why = e instanceof Error ? e.message : String(e);
        if (!signal.aborted && why !== lastError && !/ECONNREFUSED|ECONNRESET|aborted/.test(why))
          this.#log.warn({ event: "console_relay_failed", leaderHttp: up.target, err: why });
        lastError = why;
      }
      await sleep(this.#intervalMs, signal);
    }
  }

  /** Ends every client stream and the upstream request; waits for the loop. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      this.#stopUpstream();
      for (const c of this.#clients) c.end();
      this.#clients.clear();
      await this.#loop;
      await Promise.all([...this.#pumps]);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
