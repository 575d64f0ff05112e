import { CoordinatorError } from "../errors.js";
import type { StoredTask, TaskPage, TaskPersistence, TaskWrite } from "./task-persistence.js";
import { isFinalState } from "./task-record.js";

interface Row extends StoredTask {
  readonly payload: Uint8Array | undefined;
}

/**
 * A {@link TaskPersistence} in memory, with etcd's shape (a revision per write, payloads
 * dropped at the final state) but no durability and no retention: for tests of the task
 * host and service, and for examples that run without etcd.
 *
 * @example
 * ```ts
 * const board = new TaskBoard({ persistence: new MemoryTaskStore(), epoch: 1, options, log });
 * ```
 */
export class MemoryTaskStore implements TaskPersistence {
  readonly #groups = new Map<string, Map<string, Row>>();
  #revision = 0;
  #closed = false;

  get lastRevision(): number {
    return this.#revision;
  }

  async write(w: TaskWrite): Promise<number> {
    // A write resolves in a later turn, as a network round trip would.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.#closed) throw new CoordinatorError("closed", "memory task store closed");
    const r = w.record;
    let g = this.#groups.get(r.group);
    if (g === undefined) {
      g = new Map();
      this.#groups.set(r.group, g);
    }
    this.#revision += 1;
    const payload = isFinalState(r.state)
      ? undefined
      : w.kind === "create"
        ? w.payload
        : g.get(r.id)?.payload;
    g.set(r.id, { record: r, modRevision: this.#revision, payload });
    return this.#revision;
  }

  async read(group: string, ids: readonly string[]): Promise<Map<string, StoredTask>> {
    const g = this.#groups.get(group);
    const out = new Map<string, StoredTask>();
    for (const id of ids) {
      const row = g?.get(id);
      if (row !== undefined) out.set(id, { record: row.record, modRevision: row.modRevision });
    }
    return out;
  }

  async readPayloads(group: string, ids: readonly string[]): Promise<Map<string, Uint8Array>> {
    const g = this.#groups.get(group);
    const out = new Map<string, Uint8Array>();
    for (const id of ids) {
      const p = g?.get(id)?.payload;
      if (p !== undefined) out.set(id, p);
    }
    return out;
  }

  async scan(
    group: string,
    o: { afterId: string; limit: number; minModRevision?: number; atRevision?: number },
  ): Promise<TaskPage> {
    const g = this.#groups.get(group) ?? new Map<string, Row>();
    const ids = [...g.keys()].filter((id) => id > o.afterId).sort();
    const tasks: StoredTask[] = [];
    let lastId = o.afterId;
    for (const id of ids) {
      const row = g.get(id) as Row;
      if (o.minModRevision !== undefined && row.modRevision < o.minModRevision) continue;
      if (tasks.length === o.limit) return { tasks, more: true, lastId, revision: this.#revision };
      tasks.push({ record: row.record, modRevision: row.modRevision });
      lastId = id;
    }
    return { tasks, more: false, lastId, revision: this.#revision };
  }

  /** Refuses writes from now on (as a deposed leader's store would). */
  close(): void {
    this.#closed = true;
  }
}
