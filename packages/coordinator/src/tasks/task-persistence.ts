import type { TaskRecord } from "./task-record.js";

/**
 * A change to persist. A `create` stores the payload beside the record; a record in a
 * final state is stored on the retention lease and its payload is deleted (the store
 * derives both from the record's state).
 */
export type TaskWrite =
  | { readonly kind: "create"; readonly record: TaskRecord; readonly payload: Uint8Array }
  | { readonly kind: "update"; readonly record: TaskRecord };

/** A record as read back, with the etcd revision that last changed it. */
export interface StoredTask {
  readonly record: TaskRecord;
  readonly modRevision: number;
}

/** One page of a scan, ascending by id. */
export interface TaskPage {
  readonly tasks: readonly StoredTask[];
  /** True when more records follow `lastId`. */
  readonly more: boolean;
  /** The last id the scan looked at (pass as `afterId` to go on), even if filtered out. */
  readonly lastId: string;
  /** The revision the page was read at (pass as `atRevision` for a consistent walk). */
  readonly revision: number;
}

/**
 * Where task records are kept: what the task host needs of the etcd task store, so a host
 * can run on a memory-backed one in tests. Every write is durable (and fenced) when its
 * promise resolves.
 */
export interface TaskPersistence {
  /** Persists one change; resolves with the etcd revision it committed at. */
  write(w: TaskWrite): Promise<number>;
  /** The records of `ids` that exist. */
  read(group: string, ids: readonly string[]): Promise<Map<string, StoredTask>>;
  /** The payloads of `ids` that still have one (unfinished tasks). */
  readPayloads(group: string, ids: readonly string[]): Promise<Map<string, Uint8Array>>;
  /**
   * Records ascending by id after `afterId` ("" for the first), at most `limit`, only those
   * changed after `minModRevision` when given, read at `atRevision` when given.
   */
  scan(
    group: string,
    o: { afterId: string; limit: number; minModRevision?: number; atRevision?: number },
  ): Promise<TaskPage>;
  /** The highest etcd revision this store has seen committed or read. */
  readonly lastRevision: number;
}
