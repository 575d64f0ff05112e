import { once } from "node:events";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  AssignmentPhase,
  CommandKind,
  type CoordinatorMessageSchema,
  type FetchShardDataRequest,
  RecordedAttemptSchema,
  ShardService,
  TaskState,
  type WorkerMessage,
} from "@org/proto";
import { afterEach, describe, expect, it } from "vitest";
import { Channel } from "./channel.js";
import { WorkerError } from "./errors.js";
import { connectWorker, type Worker } from "./worker.js";
import type { WorkerEvent } from "./worker-event.js";
import type { WorkerMetric } from "./worker-metrics.js";

// The Worker end to end against a scripted coordinator: a real gRPC server (connect-node over
// HTTP/2, port 0) whose HeartbeatStream answers as each test says. It plays what real replicas
// do in rare moments (a deposed leader's epoch, a new incarnation, a config change), which the
// integration tests cannot bring about on demand.

type Kind = MessageInitShape<typeof CoordinatorMessageSchema>["kind"];

/** One HeartbeatStream as the server sees it. */
class Conn {
  readonly received: { at: number; msg: WorkerMessage }[] = [];
  readonly #out = new Channel<Kind | ConnectError | "end">();
  #seq = 0n;
  #arrived: (() => void) | undefined;

  send(kind: Kind): void {
    this.#out.push(kind);
  }

  /** Ends the stream with an error status (or cleanly). */
  end(error?: ConnectError): void {
    this.#out.push(error ?? "end");
  }

  /** The next message matching `pred` (from the start of the stream). */
  async next(pred: (m: WorkerMessage) => boolean, timeoutMs = 5000): Promise<WorkerMessage> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const hit = this.received.find((r) => pred(r.msg));
      if (hit !== undefined) return hit.msg;
      if (performance.now() > deadline) throw new Error("no such message");
      await new Promise<void>((r) => {
        this.#arrived = r;
        setTimeout(r, 20);
      });
    }
  }

  async *serve(
    requests: AsyncIterable<WorkerMessage>,
  ): AsyncGenerator<MessageInitShape<typeof CoordinatorMessageSchema>> {
    void (async () => {
      try {
        for await (const msg of requests) {
          this.received.push({ at: performance.now(), msg });
          this.#arrived?.();
        }
      } catch {
        // the client went away
      }
    })();
    for await (const item of this.#out) {
      if (item === "end") return;
      if (item instanceof ConnectError) throw item;
      this.#seq += 1n;
      yield { seq: this.#seq, kind: item };
    }
  }
}

interface Coordinator {
  readonly address: string;
  readonly conns: Conn[];
  /** Resolves with the n-th stream (0-based) once it opened. */
  conn(n: number): Promise<Conn>;
}

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** A scripted coordinator: `onStream` is called for each new HeartbeatStream. */
/** How the scripted coordinator serves data: pages, or only FetchShardData (an older replica). */
interface DataScript {
  readonly pages?: { id: string }[][];
  readonly records?: { id: string }[];
  readonly calls: { pages: FetchShardDataRequest[]; records: FetchShardDataRequest[] };
}

async function coordinator(
  onStream: (c: Conn, n: number) => void = () => undefined,
  data?: DataScript,
): Promise<Coordinator> {
  const conns: Conn[] = [];
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(ShardService, {
        heartbeatStream(requests) {
          const c = new Conn();
          conns.push(c);
          onStream(c, conns.length - 1);
          return c.serve(requests);
        },
        getShardInfo() {
          throw new ConnectError("not scripted", Code.Unimplemented);
        },
        async *fetchShardDataPages(req) {
          data?.calls.pages.push(req);
          if (data?.pages === undefined) throw new ConnectError("not scripted", Code.Unimplemented);
          const from = data.pages.flat().findIndex((r) => r.id > req.afterId);
          let seen = 0;
          for (const page of data.pages) {
            const rest = page.filter((_, i) => seen + i >= from);
            seen += page.length;
            if (from >= 0 && rest.length > 0)
              yield { records: rest.map((r) => ({ id: r.id, payload: new TextEncoder().encode(r.id) })) };
          }
        },
        async *fetchShardData(req) {
          if (data?.records === undefined) throw new ConnectError("not scripted", Code.Unimplemented);
          data.calls.records.push(req);
          for (const r of data.records)
            if (r.id > req.afterId) yield { id: r.id, payload: new TextEncoder().encode(r.id) };
        },
      }),
  });
  const server = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  closers.push(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((r) => server.close(r));
  });
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    conns,
    async conn(n) {
      const deadline = performance.now() + 5000;
      while (conns[n] === undefined) {
        if (performance.now() > deadline) throw new Error(`stream ${n} never opened`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return conns[n] as Conn;
    },
  };
}

function welcome(o: {
  epoch: number;
  version?: number;
  phase?: AssignmentPhase;
  shards?: number[];
  resumed?: boolean;
  incarnation?: number;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
}): Kind {
  return {
    case: "welcome",
    value: {
      sessionToken: `token-${o.incarnation ?? 1}`,
      leaderEpoch: BigInt(o.epoch),
      heartbeatIntervalMs: o.heartbeatIntervalMs ?? 100,
      sessionTimeoutMs: o.sessionTimeoutMs ?? 2000,
      resumed: o.resumed ?? false,
      incarnation: BigInt(o.incarnation ?? 1),
      assignment:
        o.version === undefined
          ? undefined
          : {
              version: BigInt(o.version),
              phase: o.phase ?? AssignmentPhase.ACTIVE,
              totalShards: 4,
              shards: o.shards ?? [0],
              shardId: o.shards?.[0] ?? 0,
              strategy: "sticky",
              leaderEpoch: BigInt(o.epoch),
            },
    },
  };
}

function ack(
  hb: WorkerMessage,
  o: {
    epoch: number;
    version: number;
    phase?: AssignmentPhase;
    shards?: number[];
    sessionTimeoutMs?: number;
    heartbeatIntervalMs?: number;
  },
): Kind {
  return {
    case: "heartbeatAck",
    value: {
      accepted: true,
      heartbeatSeq: hb.seq,
      leaderEpoch: BigInt(o.epoch),
      shardVersion: BigInt(o.version),
      phase: o.phase ?? AssignmentPhase.ACTIVE,
      totalShards: 4,
      shards: o.shards ?? [0],
      shardId: o.shards?.[0] ?? 0,
      sessionTimeoutMs: o.sessionTimeoutMs ?? 0,
      heartbeatIntervalMs: o.heartbeatIntervalMs ?? 0,
    },
  };
}

/** Acks every heartbeat of `c` with `view` until the stream ends. */
function ackAll(c: Conn, view: Parameters<typeof ack>[1]): void {
  let seen = 0;
  const t = setInterval(() => {
    const hbs = c.received.filter((r) => r.msg.kind.case === "heartbeat");
    for (const r of hbs.slice(seen)) c.send(ack(r.msg, view));
    seen = hbs.length;
  }, 10);
  closers.push(() => clearInterval(t));
}

interface Observed {
  w: Worker;
  events: WorkerEvent[];
  starts: { shard: number; version: number; at: number }[];
  stops: { shard: number; at: number }[];
  run: Promise<void>;
}

async function worker(
  address: string,
  extra: Partial<Parameters<typeof connectWorker>[0]> = {},
): Promise<Observed> {
  const w = await connectWorker({ coordinators: [address], group: "g", nodeId: "n-1", ...extra });
  closers.push(() => w.close());
  const o: Observed = { w, events: [], starts: [], stops: [], run: Promise.resolve() };
  void (async () => {
    for await (const e of w.events()) o.events.push(e);
  })();
  o.run = w.runShards(async (shard, signal) => {
    o.starts.push({ shard: shard.id, version: shard.version, at: performance.now() });
    await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
    o.stops.push({ shard: shard.id, at: performance.now() });
  });
  o.run.catch(() => undefined);
  return o;
}

async function until(pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const isHeartbeat = (m: WorkerMessage) => m.kind.case === "heartbeat";

describe("Worker against a scripted coordinator", () => {
  it("reports metrics through the hook: connects, the view's version, running shards, heartbeat ack latency", async () => {
    const c = await coordinator((conn) => {
      conn.send(welcome({ epoch: 2, version: 5, shards: [0, 1], heartbeatIntervalMs: 100 }));
      ackAll(conn, { epoch: 2, version: 5, shards: [0, 1] });
    });
    const seen: WorkerMetric[] = [];
    const o = await worker(c.address, { metrics: (m) => seen.push(m) });
    await until(
      () =>
        o.starts.length === 2 &&
        seen.filter((m) => m.name === "shard_worker_heartbeat_ack_seconds").length >= 2,
    );
    expect(seen.filter((m) => m.name === "shard_worker_connects_total")).toEqual([
      { name: "shard_worker_connects_total", kind: "counter", value: 1, labels: {} },
    ]);
    expect(seen.filter((m) => m.name === "shard_worker_assignment_version").at(-1)?.value).toBe(5);
    expect(seen.filter((m) => m.name === "shard_worker_running_shards").map((m) => m.value)).toEqual([1, 2]);
    for (const m of seen.filter((x) => x.name === "shard_worker_heartbeat_ack_seconds")) {
      expect(m.kind).toBe("histogram");
      expect(m.value).toBeGreaterThanOrEqual(0);
      expect(m.value).toBeLessThan(5);
    }
    // A hook that throws changes nothing for the worker.
    const o2 = await worker(c.address, {
      nodeId: "n-2",
      metrics: () => {
        throw new Error("broken exporter");
      },
    });
    await until(() => o2.starts.length === 2);
    expect(o2.w.assignment.version).toBe(5);
  });

  it("fetchShardData reads FetchShardDataPages: every record of every page, in order", async () => {
    const calls = { pages: [] as FetchShardDataRequest[], records: [] as FetchShardDataRequest[] };
    const pages = [[{ id: "a" }, { id: "b" }, { id: "c" }], [{ id: "d" }], [{ id: "e" }, { id: "f" }]];
    const c = await coordinator((conn) => conn.send(welcome({ epoch: 1, version: 1, shards: [0] })), {
      pages,
      records: pages.flat(),
      calls,
    });
    const o = await worker(c.address);
    const got: string[] = [];
    for await (const r of o.w.fetchShardData(0, { batchSize: 3, afterId: "" })) {
      got.push(r.id);
      expect(new TextDecoder().decode(r.payload)).toBe(r.id);
    }
    expect(got).toEqual(["a", "b", "c", "d", "e", "f"]);
    expect(calls.pages).toHaveLength(1);
    expect(calls.pages[0]).toMatchObject({
      group: "g",
      nodeId: "n-1",
      shardId: 0,
      batchSize: 3,
      afterId: "",
    });
    expect(calls.records).toHaveLength(0);
  });

  it("fetchShardData falls back to FetchShardData on a replica without pages (UNIMPLEMENTED), and remembers it", async () => {
    const calls = { pages: [] as FetchShardDataRequest[], records: [] as FetchShardDataRequest[] };
    const c = await coordinator((conn) => conn.send(welcome({ epoch: 1, version: 1, shards: [0] })), {
      records: [{ id: "a" }, { id: "b" }, { id: "c" }],
      calls,
    });
    const o = await worker(c.address);
    const read = async (afterId: string) => {
      const got: string[] = [];
      for await (const r of o.w.fetchShardData(0, { afterId })) got.push(r.id);
      return got;
    };
    expect(await read("")).toEqual(["a", "b", "c"]);
    expect(await read("a")).toEqual(["b", "c"]);
    // Two reads through FetchShardData; pages were asked for once, never again after the refusal.
    expect(calls.records.map((r) => r.afterId)).toEqual(["", "a"]);
    expect(calls.pages).toHaveLength(1);
  });

  it("rejects an ack of an older version in the same epoch: stale_view, the stream dropped, nothing of it runs", async () => {
    const c = await coordinator((conn, n) => {
      conn.send(welcome({ epoch: 5, version: 3, shards: [0], resumed: n > 0 }));
      if (n > 0) ackAll(conn, { epoch: 5, version: 3, shards: [0] });
    });
    const o = await worker(c.address);
    const first = await c.conn(0);
    await until(() => o.starts.length === 1);
    const hb = await first.next(isHeartbeat);
    // Version 2 gives shard 1: a step back in time. It must not start.
    first.send(ack(hb, { epoch: 5, version: 2, shards: [1] }));
    await until(() => o.events.some((e) => e.type === "stale_view"));
    expect(o.events.find((e) => e.type === "stale_view")).toMatchObject({
      reason: "stale_version",
      leaderEpoch: 5,
      version: 2,
      seenEpoch: 5,
      actedVersion: 3,
    });
    await until(() => o.events.some((e) => e.type === "disconnected" && e.code === "STALE_LEADER"));
    // Reconnected; shard 0 never stopped, shard 1 never started.
    await until(() => c.conns.length >= 2 && o.events.some((e) => e.type === "connected"));
    await new Promise((r) => setTimeout(r, 200));
    expect(o.starts.map((s) => s.shard)).toEqual([0]);
    expect(o.stops).toEqual([]);
    expect(o.w.assignment.version).toBe(3);
  });

  it("rejects a Welcome from an older leader epoch, accepts a newer epoch with a lower version (through pending)", async () => {
    const c = await coordinator((conn, n) => {
      if (n === 0) conn.send(welcome({ epoch: 7, version: 4, shards: [0] }));
      else if (n === 1) conn.send(welcome({ epoch: 6, version: 9, shards: [2], resumed: true }));
      else {
        // A new leader that lost the state: version 1, handed off through PENDING.
        conn.send(
          welcome({ epoch: 8, version: 1, phase: AssignmentPhase.PENDING, shards: [1], resumed: true }),
        );
        ackAll(conn, { epoch: 8, version: 1, phase: AssignmentPhase.PENDING, shards: [1] });
      }
    });
    const o = await worker(c.address);
    await until(() => o.starts.length === 1);
    (await c.conn(0)).end(new ConnectError("leader gone", Code.Unavailable));
    await until(() => o.events.some((e) => e.type === "stale_view"));
    expect(o.events.find((e) => e.type === "stale_view")).toMatchObject({
      reason: "stale_epoch",
      leaderEpoch: 6,
      seenEpoch: 7,
    });
    // Epoch 8, version 1 pending: shard 0 stops, the version is released, shard 1 waits.
    const third = await c.conn(2);
    const release = await third.next((m) => m.kind.case === "release");
    expect(release.kind.case === "release" && release.kind.value.version).toBe(1n);
    expect(o.stops.map((s) => s.shard)).toEqual([0]);
    expect(o.starts.map((s) => s.shard)).toEqual([0]);
    third.send({
      case: "assignment",
      value: {
        version: 1n,
        phase: AssignmentPhase.ACTIVE,
        totalShards: 4,
        shards: [1],
        shardId: 1,
        strategy: "sticky",
        leaderEpoch: 8n,
      },
    });
    await until(() => o.starts.length === 2);
    expect(o.starts[1]).toMatchObject({ shard: 1, version: 1 });
    expect(o.w.leaderEpoch).toBe(8);
  });

  it("a Welcome with resumed=false after the first one is a new incarnation: every shard stops before it runs again", async () => {
    const c = await coordinator((conn, n) => {
      conn.send(welcome({ epoch: 3, version: 2, shards: [0, 1], incarnation: n + 1 }));
      ackAll(conn, { epoch: 3, version: 2, shards: [0, 1] });
    });
    const o = await worker(c.address);
    expect(o.w.incarnation).toBe(1);
    await until(() => o.starts.length === 2);
    (await c.conn(0)).end(new ConnectError("expelled", Code.Unavailable));
    await until(() => o.starts.length === 4);
    expect(o.stops.map((s) => s.shard).sort()).toEqual([0, 1]);
    // Both stopped before either started again.
    const lastStop = Math.max(...o.stops.map((s) => s.at));
    expect(o.starts.slice(2).every((s) => s.at >= lastStop)).toBe(true);
    expect(o.w.incarnation).toBe(2);
    expect(o.events.find((e) => e.type === "connected")).toMatchObject({ incarnation: 2, resumed: false });
  });

  it("a new incarnation shown pending starts nothing until it turns active", async () => {
    const c = await coordinator((conn, n) => {
      if (n === 0) conn.send(welcome({ epoch: 3, version: 2, shards: [0] }));
      else
        conn.send(
          welcome({ epoch: 3, version: 2, phase: AssignmentPhase.PENDING, shards: [0], incarnation: 2 }),
        );
      ackAll(conn, {
        epoch: 3,
        version: 2,
        shards: [0],
        phase: n === 0 ? AssignmentPhase.ACTIVE : AssignmentPhase.PENDING,
      });
    });
    const o = await worker(c.address);
    await until(() => o.starts.length === 1);
    (await c.conn(0)).end(new ConnectError("expelled", Code.Unavailable));
    await until(() => o.stops.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    expect(o.starts).toHaveLength(1);
    expect(o.w.assignment).toMatchObject({ phase: "pending", running: [] });
    (await c.conn(1)).send({
      case: "assignment",
      value: {
        version: 2n,
        phase: AssignmentPhase.ACTIVE,
        totalShards: 4,
        shards: [0],
        shardId: 0,
        strategy: "sticky",
        leaderEpoch: 3n,
      },
    });
    await until(() => o.starts.length === 2);
  });

  it("applies the session timeout and heartbeat interval an ack carries", async () => {
    let acking = true;
    const c = await coordinator((conn, n) => {
      // Later streams are never welcomed: only the first session's fence counts.
      if (n > 0) return;
      conn.send(welcome({ epoch: 1, version: 1, sessionTimeoutMs: 1000, heartbeatIntervalMs: 100 }));
      let seen = 0;
      const t = setInterval(() => {
        const hbs = conn.received.filter((r) => r.msg.kind.case === "heartbeat");
        for (const r of hbs.slice(seen))
          if (acking)
            conn.send(ack(r.msg, { epoch: 1, version: 1, sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }));
        seen = hbs.length;
      }, 10);
      closers.push(() => clearInterval(t));
    });
    const o = await worker(c.address);
    const conn = await c.conn(0);
    await until(() => conn.received.filter((r) => isHeartbeat(r.msg)).length >= 5, 5000);
    const at = conn.received.filter((r) => isHeartbeat(r.msg)).map((r) => r.at);
    const gaps = at.slice(2).map((t, i) => t - (at[i + 1] ?? 0));
    expect(Math.min(...gaps)).toBeGreaterThan(200); // every 300 ms now, not 100
    // With 3000 ms in force the fence outlives the welcome's 1000 ms by far.
    acking = false;
    const stoppedAckingAt = performance.now();
    await until(() => o.events.some((e) => e.type === "fenced"), 6000);
    expect(performance.now() - stoppedAckingAt).toBeGreaterThan(1500);
  });

  it("close({ restart: true }) sends Leave{restart} only after every handler returned", async () => {
    const c = await coordinator((conn) => {
      conn.send(welcome({ epoch: 1, version: 1, shards: [0, 1] }));
      ackAll(conn, { epoch: 1, version: 1, shards: [0, 1] });
      void conn.next((m) => m.kind.case === "leave").then(() => conn.end());
    });
    const o = await worker(c.address);
    await until(() => o.starts.length === 2);
    await o.w.close({ restart: true });
    const conn = await c.conn(0);
    const leave = conn.received.find((r) => r.msg.kind.case === "leave");
    expect(leave?.msg.kind.case === "leave" && leave.msg.kind.value.restart).toBe(true);
    expect(Math.max(...o.stops.map((s) => s.at))).toBeLessThanOrEqual(leave?.at ?? 0);
    await o.run;
  });

  it("close() sends Leave without restart", async () => {
    const c = await coordinator((conn) => {
      conn.send(welcome({ epoch: 1, version: 1 }));
      void conn.next((m) => m.kind.case === "leave").then(() => conn.end());
    });
    const o = await worker(c.address);
    await o.w.close();
    const leave = (await c.conn(0)).received.find((r) => r.msg.kind.case === "leave");
    expect(leave?.msg.kind.case === "leave" && leave.msg.kind.value.restart).toBe(false);
  });

  it("INVALID_ARGUMENT is a refusal retrying cannot fix: connectWorker rejects at once", async () => {
    const c = await coordinator((conn) =>
      conn.end(new ConnectError("node_id is reserved", Code.InvalidArgument)),
    );
    const t0 = performance.now();
    const err = await connectWorker({ coordinators: [c.address], group: "g", nodeId: "n-1" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkerError);
    expect(err).toMatchObject({
      code: "invalid_argument",
      message: expect.stringContaining("node_id is reserved"),
    });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(c.conns).toHaveLength(1);
  });

  it("keeps a final report, however many acks and seconds pass, until an ack names its attempt recorded", async () => {
    const c = await coordinator((conn, n) => {
      conn.send(welcome({ epoch: 5, version: 3, shards: [0], resumed: n > 0 }));
      ackAll(conn, { epoch: 5, version: 3, shards: [0] });
    });
    const o = await worker(c.address);
    void o.w.runTasks(async () => "done");
    const first = await c.conn(0);
    first.send({ case: "task", value: { taskId: "t", attempt: 1, leaderEpoch: 5n } });
    await first.next((m) => m.kind.case === "taskUpdate" && m.kind.value.state === TaskState.SUCCEEDED);
    // Acked heartbeats for 2.5 s (about 25), none naming the report: a leader whose write of
    // it failed. (The old rule forgot a report after two acks and 2 s.)
    await new Promise((r) => setTimeout(r, 2500));
    first.end(new ConnectError("leader gone", Code.Unavailable));
    const second = await c.conn(1);
    const hello2 = await second.next((m) => m.kind.case === "hello");
    expect(hello2.kind.case === "hello" && hello2.kind.value.runningTaskIds).toEqual(["t"]);
    await second.next((m) => m.kind.case === "taskUpdate" && m.kind.value.taskId === "t");
    // Another attempt's number does not count; this attempt's does.
    const withRecorded = async (attempt: number) => {
      const hb = await second.next(isHeartbeat);
      const a = ack(hb, { epoch: 5, version: 3, shards: [0] });
      if (a?.case !== "heartbeatAck") throw new Error("not an ack");
      second.send({
        case: "heartbeatAck",
        value: { ...a.value, recordedFinals: [create(RecordedAttemptSchema, { taskId: "t", attempt })] },
      });
    };
    await withRecorded(2);
    await withRecorded(1);
    await new Promise((r) => setTimeout(r, 200));
    second.end(new ConnectError("leader gone", Code.Unavailable));
    const third = await c.conn(2);
    const hello3 = await third.next((m) => m.kind.case === "hello");
    expect(hello3.kind.case === "hello" && hello3.kind.value.runningTaskIds).toEqual([]);
  });

  it("runs dispatched tasks, lists held ones in the next Hello, and answers CANCEL_TASK with a CommandAck", async () => {
    const c = await coordinator((conn, n) => {
      conn.send(welcome({ epoch: 5, version: 3, shards: [0], resumed: n > 0 }));
      ackAll(conn, { epoch: 5, version: 3, shards: [0] });
    });
    const o = await worker(c.address);
    const reasons: unknown[] = [];
    void o.w.runTasks(async (task, signal) => {
      if (task.id === "quick") return `ok:${new TextDecoder().decode(task.payload)}`;
      await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
      reasons.push(signal.reason);
      throw signal.reason;
    });
    const first = await c.conn(0);
    const update = (conn: Conn, id: string, state: TaskState) =>
      conn.next(
        (m) => m.kind.case === "taskUpdate" && m.kind.value.taskId === id && m.kind.value.state === state,
      );
    const task = (id: string, attempt: number): Kind => ({
      case: "task",
      value: { taskId: id, attempt, leaderEpoch: 5n, payload: new TextEncoder().encode(id) },
    });
    first.send(task("quick", 1));
    const done = await update(first, "quick", TaskState.SUCCEEDED);
    expect(done.kind.case === "taskUpdate" && done.kind.value).toMatchObject({ attempt: 1, leaderEpoch: 5n });
    expect(done.kind.case === "taskUpdate" && new TextDecoder().decode(done.kind.value.result)).toBe(
      "ok:quick",
    );
    first.send(task("long", 2));
    await update(first, "long", TaskState.RUNNING);
    // The stream goes: the next Hello claims the running task (and the finished one, whose
    // report may not have been written yet).
    first.end(new ConnectError("leader gone", Code.Unavailable));
    const second = await c.conn(1);
    const hello = await second.next((m) => m.kind.case === "hello");
    expect(hello.kind.case === "hello" && [...hello.kind.value.runningTaskIds].sort()).toEqual([
      "long",
      "quick",
    ]);
    // Resumed: the final report is repeated, the running one reported running again.
    await update(second, "quick", TaskState.SUCCEEDED);
    await update(second, "long", TaskState.RUNNING);
    second.send({
      case: "command",
      value: {
        commandId: 9n,
        kind: CommandKind.CANCEL_TASK,
        taskId: "long",
        attempt: 2,
        reason: "by a client",
      },
    });
    const ackMsg = await second.next((m) => m.kind.case === "commandAck");
    expect(ackMsg.kind.case === "commandAck" && ackMsg.kind.value).toMatchObject({ commandId: 9n, ok: true });
    const cancelled = await update(second, "long", TaskState.CANCELLED);
    expect(cancelled.kind.case === "taskUpdate" && cancelled.kind.value).toMatchObject({
      attempt: 2,
      message: "by a client",
    });
    expect(reasons).toMatchObject([{ name: "TaskError", code: "cancelled" }]);
    expect(
      o.events.filter((e) => e.type === "task_finished").map((e) => e.type === "task_finished" && e.state),
    ).toEqual(["succeeded", "cancelled"]);
  });
});
