import {
  create,
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  type Client,
  type ClientReadableStream,
  credentials,
  Metadata,
  makeGenericClientConstructor,
  Server,
  ServerCredentials,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import {
  CancelTaskRequestSchema,
  type CancelTaskResponse,
  GetTaskRequestSchema,
  type GetTaskResponse,
  ListTasksRequestSchema,
  type ListTasksResponse,
  SubmitTasksRequestSchema,
  type SubmitTasksResponse,
  TaskPlacement,
  TaskState,
  WatchTasksRequestSchema,
  type WatchTasksResponse,
} from "@org/proto";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { MemoryTaskStore } from "./memory-task-store.js";
import { TaskBoard } from "./task-board.js";
import { addTaskService, taskServiceDefinition } from "./task-grpc.js";
import type { TaskHostRoute } from "./task-host.js";
import { resolveTaskOptions, type TaskOptionsInput } from "./task-options.js";

// TaskService on a real grpc-js server (port 0), over a real TaskBoard and queue; only
// the persistence is in memory (the etcd store has its own integration tests).

const log = pino({ level: "silent" });
const Ctor = makeGenericClientConstructor(taskServiceDefinition, "TaskService");
type Unary = (req: Buffer, md: Metadata, cb: (e: ServiceError | null, res?: unknown) => void) => void;

interface Harness {
  readonly board: TaskBoard;
  route: TaskHostRoute;
  call<Req extends DescMessage, Res>(method: string, schema: Req, req: MessageInitShape<Req>): Promise<Res>;
  watch(req: MessageInitShape<typeof WatchTasksRequestSchema>): ClientReadableStream<WatchTasksResponse>;
  raw(method: string, bytes: Buffer): Promise<unknown>;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function start(over: TaskOptionsInput = {}): Promise<Harness> {
  const options = resolveTaskOptions(over);
  const board = new TaskBoard({ persistence: new MemoryTaskStore(), epoch: 5, options, log });
  const server = new Server();
  const shutdown = new AbortController();
  const h = { route: { host: board } as TaskHostRoute };
  addTaskService(server, () => h.route, { signal: shutdown.signal, log, limits: options });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new Ctor(`127.0.0.1:${port}`, credentials.createInsecure()) as Client &
    Record<string, Unary>;
  closers.push(async () => {
    client.close();
    shutdown.abort();
    await board.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });
  const rawCall = (method: string, bytes: Buffer) =>
    new Promise<unknown>((resolve, reject) => {
      const fn = client[method] as Unary;
      fn.call(client, bytes, new Metadata(), (e, res) => (e ? reject(e) : resolve(res)));
    });
  return Object.assign(h, {
    board,
    call: <Req extends DescMessage, Res>(method: string, schema: Req, req: MessageInitShape<Req>) =>
      rawCall(
        method,
        Buffer.from(toBinary(schema, create(schema, req) as MessageShape<Req>)),
      ) as Promise<Res>,
    watch: (req: MessageInitShape<typeof WatchTasksRequestSchema>) => {
      const fn = client.WatchTasks as unknown as (b: Buffer) => ClientReadableStream<WatchTasksResponse>;
      return fn.call(
        client,
        Buffer.from(toBinary(WatchTasksRequestSchema, create(WatchTasksRequestSchema, req))),
      );
    },
    raw: rawCall,
  });
}

const text = (s: string) => new TextEncoder().encode(s);
const submit = (h: Harness, req: MessageInitShape<typeof SubmitTasksRequestSchema>) =>
  h.call<typeof SubmitTasksRequestSchema, SubmitTasksResponse>("SubmitTasks", SubmitTasksRequestSchema, req);
const get = (h: Harness, group: string, taskId: string) =>
  h.call<typeof GetTaskRequestSchema, GetTaskResponse>("GetTask", GetTaskRequestSchema, { group, taskId });
const cancel = (h: Harness, group: string, taskId: string) =>
  h.call<typeof CancelTaskRequestSchema, CancelTaskResponse>("CancelTask", CancelTaskRequestSchema, {
    group,
    taskId,
  });
const list = (h: Harness, req: MessageInitShape<typeof ListTasksRequestSchema>) =>
  h.call<typeof ListTasksRequestSchema, ListTasksResponse>("ListTasks", ListTasksRequestSchema, req);

async function code(p: Promise<unknown>): Promise<status | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return (e as ServiceError).code;
  }
}

/** Reads a watch stream message by message. */
function reader(stream: ClientReadableStream<WatchTasksResponse>) {
  const queue: WatchTasksResponse[] = [];
  let error: ServiceError | undefined;
  let ended = false;
  let wake: (() => void) | undefined;
  stream.on("data", (m: WatchTasksResponse) => {
    queue.push(m);
    wake?.();
  });
  stream.on("error", (e: ServiceError) => {
    error = e;
    wake?.();
  });
  stream.on("end", () => {
    ended = true;
    wake?.();
  });
  return {
    async next(): Promise<WatchTasksResponse> {
      while (queue.length === 0) {
        if (error !== undefined) throw error;
        if (ended) throw new Error("stream ended");
        await new Promise<void>((r) => {
          wake = r;
        });
      }
      return queue.shift() as WatchTasksResponse;
    },
    async error(): Promise<ServiceError> {
      while (error === undefined) {
        if (ended) throw new Error("stream ended without an error");
        await new Promise<void>((r) => {
          wake = r;
        });
      }
      return error;
    },
  };
}

describe("TaskService over grpc-js", () => {
  it("submits durably and idempotently by id; another payload under the id is ALREADY_EXISTS", async () => {
    const h = await start();
    const first = await submit(h, {
      group: "g",
      tasks: [{ id: "a", payload: text("x"), priority: 2 }, { payload: text("y") }],
    });
    expect(first.results.map((r) => r.created)).toEqual([true, true]);
    expect(first.results[0]?.task).toMatchObject({
      id: "a",
      state: TaskState.QUEUED,
      priority: 2,
      payloadBytes: 1,
      maxAttempts: 3,
    });
    const generated = first.results[1]?.task?.id ?? "";
    expect(generated).toMatch(/^[A-Za-z0-9._:-]+$/);
    const again = await submit(h, { group: "g", tasks: [{ id: "a", payload: text("x") }] });
    expect(again.results[0]?.created).toBe(false);
    expect(again.results[0]?.task?.createdAtMs).toBe(first.results[0]?.task?.createdAtMs);
    expect(await code(submit(h, { group: "g", tasks: [{ id: "a", payload: text("z") }] }))).toBe(
      status.ALREADY_EXISTS,
    );
    // A conflicting batch stores nothing, not even its other tasks.
    expect(
      await code(
        submit(h, {
          group: "g",
          tasks: [
            { id: "new", payload: text("1") },
            { id: "a", payload: text("z") },
          ],
        }),
      ),
    ).toBe(status.ALREADY_EXISTS);
    expect(await code(get(h, "g", "new"))).toBe(status.NOT_FOUND);
  });

  it("answers malformed requests with INVALID_ARGUMENT and oversized or overflowing ones with RESOURCE_EXHAUSTED", async () => {
    const h = await start({ maxTaskBytes: 8, maxQueuedTasks: 3 });
    const bad: MessageInitShape<typeof SubmitTasksRequestSchema>[] = [
      { group: "bad group", tasks: [{ payload: text("x") }] },
      { group: "g", tasks: [] },
      { group: "g", tasks: [{ id: "has/slash", payload: text("x") }] },
      { group: "g", tasks: [{ priority: 9 }] },
      { group: "g", tasks: [{ maxAttempts: 101 }] },
      { group: "g", tasks: [{ placement: TaskPlacement.SHARD, selector: { zone: "a" } }] },
      { group: "g", tasks: [{ placement: 7 as TaskPlacement }] },
      { group: "g", tasks: [{ id: "d" }, { id: "d" }] },
    ];
    for (const req of bad) expect(await code(submit(h, req))).toBe(status.INVALID_ARGUMENT);
    expect(await code(h.raw("SubmitTasks", Buffer.from([0xff, 0xff, 0xff])))).toBe(status.INVALID_ARGUMENT);
    expect(await code(submit(h, { group: "g", tasks: [{ payload: text("123456789") }] }))).toBe(
      status.RESOURCE_EXHAUSTED,
    );
    await submit(h, { group: "g", tasks: [{ id: "1" }, { id: "2" }] });
    expect(await code(submit(h, { group: "g", tasks: [{ id: "3" }, { id: "4" }] }))).toBe(
      status.RESOURCE_EXHAUSTED,
    );
    expect(await code(submit(h, { group: "g", tasks: [{ id: "3" }] }))).toBe("ok");
    expect(await code(get(h, "g", "no/such"))).toBe(status.INVALID_ARGUMENT);
    expect(await code(list(h, { group: "g", pageSize: 5000 }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(list(h, { group: "g", pageToken: "garbage" }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(list(h, { group: "g", state: 42 as TaskState }))).toBe(status.INVALID_ARGUMENT);
  });

  it("gets, cancels (queued: at once; twice: no-op; finished: FAILED_PRECONDITION), NOT_FOUND for unknown ids", async () => {
    const h = await start();
    await submit(h, { group: "g", tasks: [{ id: "q" }, { id: "r" }] });
    expect(await code(get(h, "g", "nope"))).toBe(status.NOT_FOUND);
    expect(await code(cancel(h, "g", "nope"))).toBe(status.NOT_FOUND);
    expect((await cancel(h, "g", "q")).task?.state).toBe(TaskState.CANCELLED);
    expect((await cancel(h, "g", "q")).task?.state).toBe(TaskState.CANCELLED);
    // Run "r" to success through the attempt side, as the dispatcher will.
    const [d] = await h.board.attempts.dispatch("g", [{ taskId: "r", nodeId: "w1" }]);
    expect(d?.record.attempt).toBe(1);
    await h.board.attempts.report("g", "r", {
      worker: "w1",
      attempt: 1,
      state: "running",
      progress: 0.5,
      message: "half",
    });
    expect((await get(h, "g", "r")).task).toMatchObject({
      state: TaskState.RUNNING,
      progress: 0.5,
      progressMessage: "half",
      worker: "w1",
    });
    await h.board.attempts.report("g", "r", {
      worker: "w1",
      attempt: 1,
      state: "succeeded",
      result: text("done"),
    });
    const done = (await get(h, "g", "r")).task;
    expect(done?.state).toBe(TaskState.SUCCEEDED);
    expect(new TextDecoder().decode(done?.result)).toBe("done");
    expect(await code(cancel(h, "g", "r"))).toBe(status.FAILED_PRECONDITION);
  });

  it("lists by id in pages, and by state", async () => {
    const h = await start();
    const ids = Array.from({ length: 12 }, (_, i) => `t${String(i).padStart(2, "0")}`);
    await submit(h, { group: "g", tasks: ids.map((id) => ({ id })) });
    await cancel(h, "g", "t03");
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await list(h, { group: "g", pageSize: 5, pageToken });
      expect(page.tasks.length).toBeLessThanOrEqual(5);
      seen.push(...page.tasks.map((t) => t.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(ids);
    const queued = await list(h, { group: "g", state: TaskState.QUEUED, pageSize: 100 });
    expect(queued.tasks.map((t) => t.id)).toEqual(ids.filter((id) => id !== "t03"));
    const cancelled = await list(h, { group: "g", state: TaskState.CANCELLED });
    expect(cancelled.tasks.map((t) => t.id)).toEqual(["t03"]);
  });

  it("watches ids: snapshot, synced, then changes; resumes from a cursor without a snapshot", async () => {
    const h = await start();
    await submit(h, { group: "g", tasks: [{ id: "a" }, { id: "b" }] });
    const w = reader(h.watch({ group: "g", taskIds: ["a", "missing"] }));
    const snap = await w.next();
    expect(snap.synced).toBe(true);
    expect(snap.tasks.map((t) => t.id)).toEqual(["a"]);
    await cancel(h, "g", "b"); // not watched
    await cancel(h, "g", "a");
    const change = await w.next();
    expect(change.tasks.map((t) => [t.id, t.state])).toEqual([["a", TaskState.CANCELLED]]);
    // Resume from the snapshot's cursor: the change is replayed, no snapshot.
    const again = reader(h.watch({ group: "g", taskIds: ["a"], cursor: snap.cursor }));
    const replay = await again.next();
    expect(replay.synced).toBe(true);
    expect(replay.tasks.map((t) => [t.id, t.state])).toEqual([["a", TaskState.CANCELLED]]);
    // Another leader's cursor: a snapshot instead.
    const foreign = reader(h.watch({ group: "g", taskIds: ["a"], cursor: "4.1.0" }));
    const s2 = await foreign.next();
    expect(s2.synced).toBe(true);
    expect(s2.tasks.map((t) => t.state)).toEqual([TaskState.CANCELLED]);
  });

  it("watches a whole group from a snapshot of its unfinished tasks", async () => {
    const h = await start();
    await submit(h, { group: "g", tasks: [{ id: "a" }, { id: "b" }] });
    await cancel(h, "g", "a");
    const w = reader(h.watch({ group: "g" }));
    const snap = await w.next();
    expect(snap.synced).toBe(true);
    expect(snap.tasks.map((t) => t.id)).toEqual(["b"]);
    await submit(h, { group: "g", tasks: [{ id: "c" }] });
    expect((await w.next()).tasks.map((t) => t.id)).toEqual(["c"]);
  });

  it("refuses every call on a follower with UNAVAILABLE naming the leader", async () => {
    const h = await start();
    h.route = { leader: "10.1.2.3:50051" };
    for (const p of [
      submit(h, { group: "g", tasks: [{ id: "a" }] }),
      get(h, "g", "a"),
      list(h, { group: "g" }),
      cancel(h, "g", "a"),
    ]) {
      const e = await p.then(
        () => undefined,
        (x: ServiceError) => x,
      );
      expect(e?.code).toBe(status.UNAVAILABLE);
      expect(e?.metadata.get("x-shard-leader")).toEqual(["10.1.2.3:50051"]);
    }
    const e = await reader(h.watch({ group: "g" })).error();
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.metadata.get("x-shard-leader")).toEqual(["10.1.2.3:50051"]);
  });

  it("ends watches with UNAVAILABLE when the leader stops leading", async () => {
    const h = await start();
    const w = reader(h.watch({ group: "g" }));
    expect((await w.next()).synced).toBe(true);
    await h.board.close();
    const e = await w.error();
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.metadata.get("x-shard-leader")).toEqual([""]);
    expect(await code(get(h, "g", "a"))).toBe(status.UNAVAILABLE);
  });
});
