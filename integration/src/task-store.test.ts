import { createHash } from "node:crypto";
import {
  CoordinatorError,
  createLogger,
  FencedStore,
  keyLayout,
  resolveTaskOptions,
  type TaskRecord,
  TaskStore,
  type TaskStoreOptions,
} from "@org/coordinator";
import { describe, expect, it } from "vitest";
import { useTestEnv } from "./support/test-env.js";

// The task store against a real etcd: batching within etcd's limits, per-key order, the
// fence, retention leases, paged loads. The fence is a real election-style key on a real
// lease, created here as the election would.
const env = useTestEnv(1);
const log = createLogger("task-store-test", "silent");
let nsCounter = 0;

async function setup(over: Partial<TaskStoreOptions["options"]> = {}) {
  const namespace = `/tasks-test-${process.pid}-${nsCounter++}`;
  const keys = keyLayout(namespace);
  const client = env.client;
  const lease = client.lease(30, { autoKeepAlive: true });
  const leaseId = await lease.grant();
  const electionKey = keys.electionKey(leaseId);
  await client.put(electionKey).value("test-leader").lease(leaseId).exec();
  const kv = await client.get(electionKey).exec();
  const epoch = Number(kv.kvs[0]?.create_revision);
  const deposed: CoordinatorError[] = [];
  const fenced = new FencedStore(
    client,
    electionKey,
    epoch,
    () => true,
    (e) => deposed.push(e),
  );
  const options = { ...resolveTaskOptions(), ...over };
  const store = new TaskStore({ fenced, keys, options, log });
  env.cleanup(async () => {
    await store.close().catch(() => undefined);
    await lease.revoke().catch(() => undefined);
    await client.delete().prefix(`${namespace}/`).exec();
  });
  return { namespace, keys, store, epoch, electionKey, deposed, fenced, lease };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function record(id: string, over: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id,
    group: "g",
    state: "queued",
    attempt: 0,
    maxAttempts: 3,
    placement: "balanced",
    selector: {},
    priority: 3,
    timeoutMs: 0,
    worker: null,
    leaderEpoch: 1,
    payloadBytes: 0,
    payloadSha256: sha(new Uint8Array()),
    seq: 1,
    createdAt: new Date(0).toISOString(),
    updatedAt: new Date(0).toISOString(),
    ...over,
  };
}

const create = (id: string, payload: Uint8Array, over: Partial<TaskRecord> = {}) => ({
  kind: "create" as const,
  record: record(id, { payloadBytes: payload.byteLength, payloadSha256: sha(payload), ...over }),
  payload,
});

describe("TaskStore on etcd", () => {
  it("stores the record as readable JSON and the payload beside it as raw bytes", async () => {
    const { store, namespace } = await setup();
    const payload = new TextEncoder().encode("hello");
    const rev = await store.write(create("t1", payload));
    const recordKv = (await env.client.get(`${namespace}/groups/g/tasks/t1`).exec()).kvs[0];
    const payloadKv = (await env.client.get(`${namespace}/groups/g/task-payloads/t1`).exec()).kvs[0];
    expect(Number(recordKv?.mod_revision)).toBe(rev);
    expect(Number(payloadKv?.mod_revision)).toBe(rev);
    expect(JSON.parse(recordKv?.value.toString() ?? "")).toMatchObject({
      id: "t1",
      state: "queued",
      payloadBytes: 5,
    });
    expect(payloadKv?.value.toString()).toBe("hello");
    expect([...(await store.readPayloads("g", ["t1", "nope"])).keys()]).toEqual(["t1"]);
    expect((await store.read("g", ["t1", "nope"])).get("t1")?.modRevision).toBe(rev);
  });

  it("batches many writes per transaction, never over etcd's 128 operations", async () => {
    const { store } = await setup();
    const revs = await Promise.all(
      Array.from({ length: 300 }, (_, i) => store.write(create(`t${i}`, new Uint8Array([i % 256])))),
    );
    const perTxn = new Map<number, number>();
    for (const r of revs) perTxn.set(r, (perTxn.get(r) ?? 0) + 1);
    // Two operations (record and payload) per created task.
    for (const n of perTxn.values()) expect(2 * n).toBeLessThanOrEqual(128);
    expect(perTxn.size).toBe(store.stats.txns);
    expect(store.stats.txns).toBeGreaterThanOrEqual(Math.ceil(600 / 128));
    expect(store.stats.txns).toBeLessThan(30);
    expect(store.stats.writes).toBe(300);
  });

  it("keeps a transaction under the byte budget with large payloads", async () => {
    const maxTxnBytes = 1024 * 1024;
    const { store } = await setup({ maxTxnBytes });
    const big = new Uint8Array(60 * 1024).fill(7);
    const revs = await Promise.all(Array.from({ length: 40 }, (_, i) => store.write(create(`b${i}`, big))));
    const bytes = new Map<number, number>();
    for (const r of revs) bytes.set(r, (bytes.get(r) ?? 0) + big.byteLength);
    for (const b of bytes.values()) expect(b).toBeLessThanOrEqual(maxTxnBytes);
    expect(bytes.size).toBeGreaterThanOrEqual(3);
  });

  it("commits writes to one task in the order they were made, without waiting in between", async () => {
    const { store, namespace } = await setup({ maxTxnsInFlight: 4 });
    const p = new Uint8Array([1]);
    const base = create("k", p);
    const dispatched: TaskRecord = { ...base.record, state: "dispatched", attempt: 1, worker: "w1" };
    const done: TaskRecord = { ...dispatched, state: "succeeded", result: { text: "r" } };
    const revs = await Promise.all([
      store.write(base),
      store.write({ kind: "update", record: dispatched }),
      store.write({ kind: "update", record: done }),
      // Other tasks interleaved, so transactions do run side by side.
      ...Array.from({ length: 50 }, (_, i) => store.write(create(`o${i}`, p))),
    ]);
    expect(revs[0]).toBeLessThan(revs[1] as number);
    expect(revs[1]).toBeLessThan(revs[2] as number);
    const raw = await env.client.get(`${namespace}/groups/g/tasks/k`).string();
    expect(JSON.parse(raw ?? "{}")).toMatchObject({ state: "succeeded", result: { text: "r" } });
  });

  it("puts a finished task on a retention lease and deletes its payload; the record expires", async () => {
    const { store, namespace } = await setup({ taskRetentionMs: 1000 });
    for (const id of ["f", "f2"]) {
      const c = create(id, new TextEncoder().encode("p"));
      await store.write(c);
      await store.write({ kind: "update", record: { ...c.record, state: "cancelled" } });
    }
    const kv = (await env.client.get(`${namespace}/groups/g/tasks/f`).exec()).kvs[0];
    const kv2 = (await env.client.get(`${namespace}/groups/g/tasks/f2`).exec()).kvs[0];
    expect(kv?.lease).not.toBe("0");
    // Both finished in the same bucket: they share one lease.
    expect(kv2?.lease).toBe(kv?.lease);
    expect(store.stats.leases).toBe(1);
    expect(await env.client.get(`${namespace}/groups/g/task-payloads/f`).string()).toBeNull();
    const ttl = await env.client.leaseClient.leaseTimeToLive({ ID: kv?.lease ?? "0" });
    // TTL = retention + a bucket of max(1 s, retention / 10): 2 s here.
    expect(Number(ttl.grantedTTL)).toBe(2);
    const deadline = performance.now() + 15_000;
    while ((await env.client.get(`${namespace}/groups/g/tasks/f`).string()) !== null) {
      expect(performance.now()).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  it("refuses every write once the election key is gone (deposed), and writes nothing", async () => {
    const { store, electionKey, deposed, namespace } = await setup();
    await store.write(create("before", new Uint8Array([1])));
    await env.client.delete().key(electionKey).exec();
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => store.write(create(`after${i}`, new Uint8Array([1])))),
    );
    for (const r of results) {
      expect(r.status).toBe("rejected");
      if (r.status === "rejected") expect(CoordinatorError.from(r.reason).code).toBe("deposed");
    }
    expect(deposed.length).toBeGreaterThan(0);
    const keys = await env.client.getAll().prefix(`${namespace}/groups/g/tasks/`).keys();
    expect(keys.map((k) => k.split("/").pop())).toEqual(["before"]);
  });

  it("loads unfinished tasks in pages at one revision, and scans by modification revision", async () => {
    const { store } = await setup();
    const p = new Uint8Array([1]);
    await Promise.all(
      Array.from({ length: 23 }, (_, i) => store.write(create(`u${String(i).padStart(2, "0")}`, p))),
    );
    const firstRev = store.lastRevision;
    const f = create("u05", p).record;
    await store.write({ kind: "update", record: { ...f, state: "failed" } });
    const pages: string[][] = [];
    for await (const page of store.loadUnfinished("g", 5)) pages.push(page.map((r) => r.id));
    expect(pages.flat()).toEqual(
      Array.from({ length: 23 }, (_, i) => `u${String(i).padStart(2, "0")}`).filter((id) => id !== "u05"),
    );
    expect(Math.max(...pages.map((p) => p.length))).toBeLessThanOrEqual(5);
    const changed = await store.scan("g", { afterId: "", limit: 100, minModRevision: firstRev + 1 });
    expect(changed.tasks.map((t) => t.record.id)).toEqual(["u05"]);
  });
});
