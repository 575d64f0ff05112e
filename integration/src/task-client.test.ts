import { Server, ServerCredentials } from "@grpc/grpc-js";
import {
  addTaskService,
  createLogger,
  FencedStore,
  keyLayout,
  resolveTaskOptions,
  TaskBoard,
  type TaskHostRoute,
  TaskStore,
} from "@org/coordinator";
import { createTaskClient, type TaskClient, TaskClientError, type TaskWatchEvent } from "@org/worker-sdk";
import { describe, expect, it } from "vitest";
import { useTestEnv } from "./support/test-env.js";

// The SDK's task client against the real TaskService (grpc-js server on port 0), a real
// TaskBoard and the real etcd task store. Leadership is played by hand: each "replica"
// is a server whose route names either its board or the leader's address, and each
// board writes through its own election-style fence key.
const env = useTestEnv(1);
const log = createLogger("task-client-test", "silent");
let nsCounter = 0;

interface Replica {
  readonly address: string;
  route: TaskHostRoute;
  board: TaskBoard | undefined;
  lead(epochKey: string): Promise<TaskBoard>;
  /** Drops every connection at once, as a process killed by SIGKILL does (streams reset). */
  kill(): void;
}

async function cluster(n: number) {
  const namespace = `/task-client-${process.pid}-${nsCounter++}`;
  const keys = keyLayout(namespace);
  const options = resolveTaskOptions({ maxQueuedTasks: 5000 });
  const replicas: Replica[] = [];
  for (let i = 0; i < n; i++) {
    const server = new Server();
    const shutdown = new AbortController();
    const r: Replica = {
      address: "",
      route: { leader: "" },
      board: undefined,
      async lead(name: string) {
        const lease = env.client.lease(30);
        const leaseId = await lease.grant();
        const electionKey = keys.electionKey(leaseId);
        await env.client.put(electionKey).value(name).lease(leaseId).exec();
        const epoch = Number((await env.client.get(electionKey).exec()).kvs[0]?.create_revision);
        const fenced = new FencedStore(
          env.client,
          electionKey,
          epoch,
          () => true,
          () => undefined,
        );
        const store = new TaskStore({ fenced, keys, options, log });
        const board = new TaskBoard({ persistence: store, epoch, options, log });
        env.cleanup(async () => {
          await board.close();
          await store.close();
          await lease.revoke().catch(() => undefined);
        });
        this.board = board;
        this.route = { host: board };
        return board;
      },
      kill() {
        server.forceShutdown();
      },
    };
    addTaskService(server, () => r.route, { signal: shutdown.signal, log, limits: options });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    (r as { address: string }).address = `127.0.0.1:${port}`;
    env.cleanup(async () => {
      shutdown.abort();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    });
    replicas.push(r);
  }
  env.cleanup(() => env.client.delete().prefix(`${namespace}/`).exec());
  return { namespace, replicas };
}

function client(
  addresses: string[],
  extra: Partial<Parameters<typeof createTaskClient>[0]> = {},
): TaskClient {
  const c = createTaskClient({ coordinators: addresses, backoff: { baseMs: 20, capMs: 100 }, ...extra });
  env.cleanup(() => c.close());
  return c;
}

async function failure(p: Promise<unknown>): Promise<TaskClientError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TaskClientError) return e;
    throw e;
  }
  throw new Error("expected the call to fail");
}

describe("task client", () => {
  it("submits through a follower (following x-shard-leader), durably, idempotently, in chunks", async () => {
    const { namespace, replicas } = await cluster(2);
    const [leader, follower] = replicas as [Replica, Replica];
    await leader.lead("a");
    follower.route = { leader: leader.address };
    const tasks = client([follower.address], { maxTasksPerRequest: 500 });
    const one = await tasks.submit("g", {
      id: "first",
      payload: "hello",
      priority: 1,
      selector: { zone: "a" },
    });
    expect(one).toMatchObject({
      created: true,
      task: { id: "first", state: "queued", priority: 1, payloadBytes: 5 },
    });
    // Durable before the answer: the record is in etcd now.
    expect(await env.client.get(`${namespace}/groups/g/tasks/first`).string()).toContain('"state":"queued"');
    const again = await tasks.submit("g", { id: "first", payload: "hello" });
    expect(again.created).toBe(false);
    expect((await failure(tasks.submit("g", { id: "first", payload: "other" }))).code).toBe("already_exists");
    const batch = await tasks.submit(
      "g",
      Array.from({ length: 1200 }, (_, i) => ({ payload: `p${i}` })),
    );
    expect(batch).toHaveLength(1200);
    expect(new Set(batch.map((b) => b.task.id)).size).toBe(1200);
    expect(batch.every((b) => b.created)).toBe(true);
    const keys = await env.client.getAll().prefix(`${namespace}/groups/g/tasks/`).keys();
    expect(keys).toHaveLength(1201);
  });

  it("gets, lists page by page, cancels; maps statuses to error codes", async () => {
    const { replicas } = await cluster(1);
    const [leader] = replicas as [Replica];
    await leader.lead("a");
    const tasks = client([leader.address]);
    const ids = Array.from({ length: 25 }, (_, i) => `t${String(i).padStart(2, "0")}`);
    await tasks.submit(
      "g",
      ids.map((id) => ({ id })),
    );
    expect((await tasks.get("g", "t07")).state).toBe("queued");
    expect((await failure(tasks.get("g", "nope"))).code).toBe("not_found");
    expect((await tasks.cancel("g", "t07", { reason: "test" })).state).toBe("cancelled");
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await tasks.list("g", { pageSize: 10, pageToken });
      seen.push(...page.tasks.map((t) => t.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(ids);
    expect((await tasks.list("g", { state: "cancelled" })).tasks.map((t) => t.id)).toEqual(["t07"]);
    expect((await failure(tasks.submit("g", { priority: 9 }))).code).toBe("invalid_argument");
    expect((await failure(tasks.submit("bad group", {}))).code).toBe("invalid_argument");
    expect((await failure(tasks.get("g", "t07", { signal: AbortSignal.abort() }))).code).toBe("closed");
  });

  it("gives up with unavailable when no leader answers within callTimeoutMs", async () => {
    const { replicas } = await cluster(1);
    const tasks = client([(replicas[0] as Replica).address], { callTimeoutMs: 300 });
    expect((await failure(tasks.get("g", "x"))).code).toBe("unavailable");
  });

  it("waits for a task's final state", async () => {
    const { replicas } = await cluster(1);
    const board = await (replicas[0] as Replica).lead("a");
    const tasks = client([(replicas[0] as Replica).address]);
    const { task } = await tasks.submit("g", { payload: "in" });
    const done = tasks.wait("g", task.id);
    // Play the worker's part through the attempt side, as the dispatcher will.
    await board.attempts.dispatch("g", [{ taskId: task.id, nodeId: "w1" }]);
    await board.attempts.report("g", task.id, { worker: "w1", attempt: 1, state: "running", progress: 0.5 });
    await board.attempts.report("g", task.id, {
      worker: "w1",
      attempt: 1,
      state: "succeeded",
      result: new TextEncoder().encode("out"),
    });
    const final = await done;
    expect(final.state).toBe("succeeded");
    expect(new TextDecoder().decode(final.result)).toBe("out");
    expect((await failure(tasks.wait("g", "never-submitted"))).code).toBe("not_found");
  });

  it("keeps a watch going across a leader change, missing no final state", async () => {
    const { replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    const boardA = await a.lead("a");
    b.route = { leader: a.address };
    const tasks = client([a.address, b.address]);
    await tasks.submit("g", [{ id: "x" }, { id: "y" }]);
    const ac = new AbortController();
    const events: TaskWatchEvent[] = [];
    let wake: (() => void) | undefined;
    const consumer = (async () => {
      for await (const e of tasks.watch("g", { signal: ac.signal })) {
        events.push(e);
        wake?.();
      }
    })();
    const until = async (pred: () => boolean) => {
      const deadline = performance.now() + 15_000;
      while (!pred()) {
        if (performance.now() > deadline)
          throw new Error(
            `timed out; events: ${JSON.stringify(events.map((e) => (e.type === "task" ? `${e.task.id}:${e.task.state}` : e.type)))}`,
          );
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
    };
    await until(() => events.some((e) => e.type === "synced"));
    const syncs = () => events.filter((e) => e.type === "synced").length;
    // Failover: b leads (a fresh fence and epoch on the same etcd), a names it and stops.
    const boardB = await b.lead("b");
    a.route = { leader: b.address };
    await boardA.close();
    // A change the watcher cannot see live: it happens before the watch reconnects.
    await boardB.cancel("g", "x", "during the gap", new AbortController().signal);
    await until(() => syncs() >= 2);
    await until(() =>
      events.some((e) => e.type === "task" && e.task.id === "x" && e.task.state === "cancelled"),
    );
    await boardB.cancel("g", "y", "live", new AbortController().signal);
    await until(() =>
      events.some((e) => e.type === "task" && e.task.id === "y" && e.task.state === "cancelled"),
    );
    ac.abort();
    await consumer;
    expect(boardB.epoch).toBeGreaterThan(boardA.epoch);
  });

  it("keeps a watch going when the leader's connections drop at once (its process killed)", async () => {
    const { replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    const boardA = await a.lead("a");
    b.route = { leader: a.address };
    const tasks = client([a.address, b.address]);
    await tasks.submit("g", [{ id: "x" }]);
    const ac = new AbortController();
    const events: TaskWatchEvent[] = [];
    let failed: unknown;
    const consumer = (async () => {
      try {
        for await (const e of tasks.watch("g", { signal: ac.signal })) events.push(e);
      } catch (e) {
        failed = e;
      }
    })();
    const until = async (pred: () => boolean, what: string) => {
      const deadline = performance.now() + 15_000;
      while (!pred()) {
        if (failed !== undefined)
          throw new Error(
            `the watch ended (${String(failed)}, cause ${String((failed as TaskClientError).cause)}) waiting for ${what}`,
          );
        if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await until(() => events.some((e) => e.type === "synced"), "the first snapshot");
    // The streams are reset under the watcher (the client sees CANCEL, not UNAVAILABLE).
    a.kill();
    await boardA.close();
    const boardB = await b.lead("b");
    await boardB.cancel("g", "x", "after the kill", new AbortController().signal);
    await until(
      () => events.some((e) => e.type === "task" && e.task.id === "x" && e.task.state === "cancelled"),
      "x cancelled on the new leader",
    );
    ac.abort();
    await consumer;
    expect(failed).toBeUndefined();
    expect(events.filter((e) => e.type === "synced").length).toBeGreaterThanOrEqual(2);
  });

  it("close() ends watches and fails later calls with closed", async () => {
    const { replicas } = await cluster(1);
    await (replicas[0] as Replica).lead("a");
    const tasks = createTaskClient({ coordinators: [(replicas[0] as Replica).address] });
    const it = tasks.watch("g")[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ type: "synced" });
    const pending = it.next();
    await tasks.close();
    expect((await pending).done).toBe(true);
    expect((await failure(tasks.get("g", "x"))).code).toBe("closed");
    await tasks.close();
  });
});
