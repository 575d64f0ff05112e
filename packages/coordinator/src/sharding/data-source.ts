import { shardOf } from "@org/proto";
import type { Etcd3 } from "etcd3";
import type { KeyLayout } from "../store/keys.js";

/** One record of a shard's data. */
export interface ShardRecord {
  readonly id: string;
  readonly payload: Uint8Array;
}

/**
 * Where FetchShardData reads records. `read` yields the records of `shardId` (of
 * `totalShards`) in ascending id order, strictly after `afterId` when given, fetching about
 * `pageSize` at a time; it stops when `signal` aborts.
 */
export interface DataSource {
  read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord>;
}

/**
 * The built-in source: records stored under `<ns>/groups/<group>/data/<id>` (load them with
 * `coordinator data load` or plain `etcdctl put`). The shard of an id is `shardOf(id)`,
 * exactly as the SDK's `owns()` computes it. Ids are ordered as etcd orders keys (bytewise).
 */
export class EtcdDataSource implements DataSource {
  readonly #client: Etcd3;
  readonly #keys: KeyLayout;

  constructor(client: Etcd3, keys: KeyLayout) {
    this.#client = client;
    this.#keys = keys;
  }

  async *read(
    group: string,
    shardId: number,
    totalShards: number,
    options: { afterId: string; pageSize: number; signal: AbortSignal },
  ): AsyncIterable<ShardRecord> {
    const prefix = this.#keys.dataPrefix(group);
    // The smallest key after `prefix+afterId` is that key with a NUL byte appended.
    let from = options.afterId === "" ? prefix : `${prefix}${options.afterId}\0`;
    const end = `${prefix.slice(0, -1)}0`; // "/" + 1 = "0": the end of the prefix range
    for (;;) {
      options.signal.throwIfAborted();
      const res = await this.#client
        .getAll()
        .inRange({ start: from, end })
        .limit(Math.max(options.pageSize, 1))
        .sort("Key", "Ascend")
        .exec();
      for (const kv of res.kvs) {
        const id = kv.key.toString().slice(prefix.length);
        if (shardOf(id, totalShards) === shardId) yield { id, payload: kv.value };
      }
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || last === undefined) return;
      from = `${last.key.toString()}\0`;
    }
  }
}
