import type { Etcd3, IOperation, IRequestOp } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { FencedStore } from "../leadership/fenced-store.js";
import { rawLeaseClient } from "../store/etcd-client.js";
import type { KeyLayout } from "../store/keys.js";
import { type TaskKeys, taskKeys } from "./task-keys.js";
import type { TaskOptions } from "./task-options.js";
import type { StoredTask, TaskPage, TaskPersistence, TaskWrite } from "./task-persistence.js";
import { isFinalState, parseTaskRecord, serializeTaskRecord, type TaskRecord } from "./task-record.js";

/** Options of {@link TaskStore}. */
export interface TaskStoreOptions {
  /** The leader's fenced writer: every transaction is guarded by its election key. */
  readonly fenced: FencedStore;
  readonly keys: KeyLayout;
  readonly options: Pick<
    TaskOptions,
    "writeLingerMs" | "maxTxnOps" | "maxTxnBytes" | "maxTxnsInFlight" | "taskRetentionMs"
  >;
  readonly log: Logger;
}

interface Pending {
  readonly write: TaskWrite;
  /** The record's JSON, serialized once. */
  readonly value: string;
  /** Keys this write touches: no two writes to one key share or overlap a transaction. */
  readonly keys: readonly string[];
  readonly ops: number;
  readonly bytes: number;
  readonly final: boolean;
  readonly resolve: (revision: number) => void;
  readonly reject: (e: unknown) => void;
}

// Framing per operation in a TxnRequest (tags, lengths, lease id), generously rounded.
const opOverheadBytes = 32;

/**
 * The tasks' etcd store: durable, batched, fenced writes, and paged reads.
 *
 * Writes wait up to `writeLingerMs` for others to share their transaction, so etcd's
 * commit rate (one raft round and fsync per transaction), not the number of tasks, sets
 * the ceiling. A transaction holds at most `maxTxnOps` operations (etcd's `--max-txn-ops`,
 * 128) and `maxTxnBytes` of keys and values (under etcd's `--max-request-bytes`, 1.5 MiB).
 * Up to `maxTxnsInFlight` transactions run at once, but never two that touch one key:
 * writes to a key commit in the order they were made. Every transaction goes through
 * {@link FencedStore.commit} (guarded by the election key's create revision), so a deposed
 * leader's writes all fail with CoordinatorError("deposed").
 *
 * Finished records go on a retention lease: one lease per time bucket of a tenth of the
 * retention (at least a second), granted on first use with TTL = retention + bucket, so a
 * record lives between `taskRetentionMs` and 1.1x that after it finished, and a whole
 * bucket of finished tasks costs one lease. Leases are never kept alive: they expire on
 * their own, with or without a leader.
 *
 * A write whose transaction failed with `etcd_unavailable` may still have committed; the
 * caller treats the outcome as unknown (a submit's client retries, idempotently by id).
 *
 * @example
 * ```ts
 * const store = new TaskStore({ fenced, keys, options, log });
 * await store.write({ kind: "create", record, payload });   // durable when it resolves
 * await store.close();
 * ```
 */
export class TaskStore implements TaskPersistence {
  readonly #o: TaskStoreOptions;
  readonly #tk: TaskKeys;
  readonly #client: Etcd3;
  #pending: Pending[] = [];
  #pendingOps = 0;
  #pendingBytes = 0;
  readonly #busyKeys = new Set<string>();
  #inFlight = 0;
  #linger: NodeJS.Timeout | undefined;
  #lease: { id: string; until: number } | undefined;
  #leaseGrant: Promise<string> | undefined;
  #lastRevision = 0;
  #closed = false;
  readonly #idle = new Set<() => void>();
  /** Transactions committed, and task writes they carried (for metrics and benchmarks). */
  readonly stats = { txns: 0, writes: 0, leases: 0 };

  constructor(o: TaskStoreOptions) {
    this.#o = o;
    this.#tk = taskKeys(o.keys);
    this.#client = o.fenced.client;
  }

  get lastRevision(): number {
    return this.#lastRevision;
  }

  /** Writes waiting for a transaction or in one. */
  get backlog(): number {
    return this.#pending.length + this.#inFlight;
  }

  write(w: TaskWrite): Promise<number> {
    if (this.#closed) return Promise.reject(new CoordinatorError("closed", "task store closed"));
    const r = w.record;
    const recordKey = this.#tk.task(r.group, r.id);
    const payloadKey = this.#tk.payload(r.group, r.id);
    const final = isFinalState(r.state);
    const value = serializeTaskRecord(r);
    let ops = 1;
    let bytes = recordKey.length + Buffer.byteLength(value) + opOverheadBytes;
    if (w.kind === "create" || final) {
      ops += 1;
      bytes += payloadKey.length + opOverheadBytes + (w.kind === "create" ? w.payload.byteLength : 0);
    }
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    this.#pending.push({
      write: w,
      value,
      keys: [recordKey, payloadKey],
      ops,
      bytes,
      final,
      resolve,
      reject,
    });
    this.#pendingOps += ops;
    this.#pendingBytes += bytes;
    this.#schedule();
    return promise;
  }

  #schedule(): void {
    if (this.#inFlight >= this.#o.options.maxTxnsInFlight) return;
    if (this.#pendingOps >= this.#o.options.maxTxnOps || this.#pendingBytes >= this.#o.options.maxTxnBytes) {
      clearTimeout(this.#linger);
      this.#linger = undefined;
      this.#flush();
      return;
    }
    if (this.#linger === undefined && this.#pending.length > 0) {
      this.#linger = setTimeout(() => {
        this.#linger = undefined;
        this.#flush();
      }, this.#o.options.writeLingerMs);
    }
  }

  /** Starts transactions while there is room in flight and writes that may go. */
  #flush(): void {
    const { maxTxnOps, maxTxnBytes, maxTxnsInFlight } = this.#o.options;
    while (this.#inFlight < maxTxnsInFlight && this.#pending.length > 0) {
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const batchKeys = new Set<string>();
      // Keys held back in this pass: a later write to such a key must wait too, or it
      // would overtake the earlier one.
      const blocked = new Set<string>();
      let ops = 0;
      let bytes = 0;
      let i = 0;
      for (; i < this.#pending.length; i++) {
        const p = this.#pending[i] as Pending;
        if (ops + p.ops > maxTxnOps || bytes + p.bytes > maxTxnBytes) {
          if (batch.length > 0) break; // full: the rest waits, in order
        }
        const clash = p.keys.some((k) => this.#busyKeys.has(k) || batchKeys.has(k) || blocked.has(k));
        if (clash) {
          for (const k of p.keys) blocked.add(k);
          rest.push(p);
          continue;
        }
        batch.push(p);
        for (const k of p.keys) batchKeys.add(k);
        ops += p.ops;
        bytes += p.bytes;
      }
      if (batch.length === 0) return;
      this.#pending = i < this.#pending.length ? rest.concat(this.#pending.slice(i)) : rest;
      this.#pendingOps -= ops;
      this.#pendingBytes -= bytes;
      for (const k of batchKeys) this.#busyKeys.add(k);
      this.#inFlight += 1;
      void this.#commit(batch).finally(() => {
        for (const k of batchKeys) this.#busyKeys.delete(k);
        this.#inFlight -= 1;
        if (this.#pending.length > 0) this.#schedule();
        else if (this.#inFlight === 0) for (const f of this.#idle) f();
      });
    }
  }

  async #commit(batch: readonly Pending[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const lease = batch.some((p) => p.final) ? await this.#retentionLease() : undefined;
        const ops: IOperation[] = [];
        for (const p of batch) ops.push(...this.#ops(p, lease));
        const revision = await this.#o.fenced.commit(...ops);
        if (revision > this.#lastRevision) this.#lastRevision = revision;
        this.stats.txns += 1;
        this.stats.writes += batch.length;
        for (const p of batch) p.resolve(revision);
        return;
      } catch (e) {
        // A retention lease revoked behind our back (an operator, a clock jump in etcd)
        // fails the whole transaction: take a fresh lease and try once more.
        if (attempt === 0 && /lease not found/i.test(String(e instanceof Error ? e.message : e))) {
          this.#lease = undefined;
          continue;
        }
        const err = CoordinatorError.from(e);
        this.#o.log.warn({
          event: "task_write_failed",
          code: err.code,
          writes: batch.length,
          err: err.message,
        });
        for (const p of batch) p.reject(err);
        return;
      }
    }
  }

  #ops(p: Pending, lease: string | undefined): IOperation[] {
    const w = p.write;
    const r = w.record;
    const [recordKey, payloadKey] = p.keys as [string, string];
    const value = p.value;
    if (isFinalState(r.state)) {
      // The payload is not needed once the task finished; the record stays for the
      // retention and then goes with its lease.
      return [
        this.#client
          .put(recordKey)
          .value(value)
          .lease(lease ?? "0"),
        this.#client.delete().key(payloadKey),
      ];
    }
    const put = this.#client.put(recordKey).value(value);
    if (w.kind === "update") return [put];
    return [
      put,
      this.#client
        .put(payloadKey)
        .value(Buffer.from(w.payload.buffer, w.payload.byteOffset, w.payload.byteLength)),
    ];
  }

  /** The lease of the current retention bucket, granted when the bucket opens. */
  async #retentionLease(): Promise<string> {
    const now = performance.now();
    if (this.#lease !== undefined && now < this.#lease.until) return this.#lease.id;
    this.#leaseGrant ??= (async () => {
      try {
        const retention = this.#o.options.taskRetentionMs;
        const bucketMs = Math.max(1000, Math.floor(retention / 10));
        const ttlSec = Math.ceil((retention + bucketMs) / 1000);
        const sentAt = performance.now();
        const res = await rawLeaseClient(this.#client).leaseGrant({ TTL: ttlSec });
        this.stats.leases += 1;
        this.#lease = { id: res.ID, until: sentAt + bucketMs };
        this.#o.log.info({ event: "task_retention_lease", leaseId: res.ID, ttlSec });
        return res.ID;
      } finally {
        this.#leaseGrant = undefined;
      }
    })();
    return this.#leaseGrant;
  }

  async read(group: string, ids: readonly string[]): Promise<Map<string, StoredTask>> {
    const out = new Map<string, StoredTask>();
    const values = await this.#readKeys(ids.map((id) => this.#tk.task(group, id)));
    for (const [key, kv] of values) {
      const record = parseTaskRecord(key, kv.value.toString("utf8"));
      out.set(record.id, { record, modRevision: kv.modRevision });
    }
    return out;
  }

  async readPayloads(group: string, ids: readonly string[]): Promise<Map<string, Uint8Array>> {
    const prefix = this.#tk.payloadsPrefix(group);
    const out = new Map<string, Uint8Array>();
    const values = await this.#readKeys(ids.map((id) => this.#tk.payload(group, id)));
    for (const [key, kv] of values) out.set(key.slice(prefix.length), new Uint8Array(kv.value));
    return out;
  }

  /** Point reads, up to maxTxnOps per read-only transaction (one round trip each). */
  async #readKeys(keys: readonly string[]): Promise<Map<string, { value: Buffer; modRevision: number }>> {
    const out = new Map<string, { value: Buffer; modRevision: number }>();
    const chunk = this.#o.options.maxTxnOps;
    for (let i = 0; i < keys.length; i += chunk) {
      const slice = keys.slice(i, i + chunk);
      const success: IRequestOp[] = slice.map((k) => ({ request_range: { key: Buffer.from(k) } }));
      let res: Awaited<ReturnType<Etcd3["kv"]["txn"]>>;
      try {
        res = await this.#client.kv.txn({ success });
      } catch (e) {
        throw CoordinatorError.from(e, "etcd_unavailable");
      }
      this.#saw(Number(res.header.revision));
      for (const r of res.responses) {
        for (const kv of r.response_range?.kvs ?? [])
          out.set(kv.key.toString("utf8"), { value: kv.value, modRevision: Number(kv.mod_revision) });
      }
    }
    return out;
  }

  async scan(
    group: string,
    o: { afterId: string; limit: number; minModRevision?: number; atRevision?: number },
  ): Promise<TaskPage> {
    const prefix = this.#tk.tasksPrefix(group);
    const start = o.afterId === "" ? prefix : `${prefix}${o.afterId}\0`;
    // The end of the prefix range: the prefix with its last byte incremented ("/" -> "0").
    const end = `${prefix.slice(0, -1)}${String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)}`;
    let b = this.#client.getAll().inRange({ start, end }).limit(o.limit);
    if (o.minModRevision !== undefined && o.minModRevision > 0) b = b.minModRevision(o.minModRevision);
    if (o.atRevision !== undefined && o.atRevision > 0) b = b.revision(o.atRevision);
    let res: Awaited<ReturnType<typeof b.exec>>;
    try {
      res = await b.exec();
    } catch (e) {
      throw CoordinatorError.from(e, "etcd_unavailable");
    }
    const revision = Number(res.header.revision);
    this.#saw(revision);
    const tasks: StoredTask[] = [];
    let lastId = o.afterId;
    for (const kv of res.kvs) {
      const key = kv.key.toString("utf8");
      const id = this.#tk.taskIdOf(group, key);
      if (id === undefined) continue;
      lastId = id;
      tasks.push({
        record: parseTaskRecord(key, kv.value.toString("utf8")),
        modRevision: Number(kv.mod_revision),
      });
    }
    return { tasks, more: res.more, lastId, revision };
  }

  /**
   * Every unfinished task of `group`, in pages of `pageSize` records read at one revision
   * (a consistent snapshot, however long the walk).
   */
  async *loadUnfinished(group: string, pageSize = 500): AsyncGenerator<TaskRecord[]> {
    let afterId = "";
    let atRevision: number | undefined;
    for (;;) {
      const page = await this.scan(group, { afterId, limit: pageSize, atRevision });
      atRevision = page.revision;
      const unfinished = page.tasks.map((t) => t.record).filter((r) => !isFinalState(r.state));
      if (unfinished.length > 0) yield unfinished;
      if (!page.more) return;
      afterId = page.lastId;
    }
  }

  #saw(revision: number): void {
    if (revision > this.#lastRevision) this.#lastRevision = revision;
  }

  /** Resolves when every write made so far has settled. */
  flushed(): Promise<void> {
    if (this.#pending.length === 0 && this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#idle.delete(done);
        resolve();
      };
      this.#idle.add(done);
      clearTimeout(this.#linger);
      this.#linger = undefined;
      this.#flush();
    });
  }

  /** Commits what is pending, then refuses new writes. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.flushed();
  }
}
