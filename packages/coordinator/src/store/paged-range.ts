import { type Etcd3, type IKeyValue, Range } from "etcd3";

/** A byte range `[start, end)` of etcd keys. */
export interface KeyRange {
  readonly start: string | Buffer;
  readonly end: string | Buffer;
}

/** Every key starting with `prefix`, as a range (the end is the prefix with its last byte + 1). */
export function prefixRange(prefix: string): KeyRange {
  const r = Range.prefix(prefix);
  return { start: r.start, end: r.end };
}

/**
 * Reads every key in a range a page at a time, in key order, so the size of one answer never
 * depends on how many keys there are (etcd's and the client's message limits stay far away).
 * Every page is read at the first page's revision: the result is one consistent snapshot even
 * while others write.
 */
export async function* pagedRange(
  client: Etcd3,
  range: KeyRange,
  options: { readonly pageSize?: number } = {},
): AsyncGenerator<IKeyValue> {
  const pageSize = options.pageSize ?? 500;
  let from: string | Buffer = range.start;
  let revision: string | undefined;
  for (;;) {
    let q = client.getAll().inRange({ start: from, end: range.end }).limit(pageSize);
    if (revision !== undefined) q = q.revision(revision);
    const res = await q.exec();
    revision ??= res.header.revision;
    for (const kv of res.kvs) yield kv;
    const last = res.kvs.at(-1);
    if (!res.more || last === undefined) return;
    // The smallest key after `last` is `last` with a NUL byte appended.
    from = Buffer.concat([last.key, Buffer.from([0])]);
  }
}

/**
 * The distinct first path segments under `prefix` (`<prefix><name>/...`), one small keys-only
 * request per name: after finding a name the scan jumps past everything under it, so a group
 * with a hundred thousand keys costs the same as one with three.
 */
export async function listChildren(client: Etcd3, prefix: string): Promise<string[]> {
  const names: string[] = [];
  const end = prefixRange(prefix).end;
  let from: string | Buffer = prefix;
  for (;;) {
    const res: string[] = await client.getAll().inRange({ start: from, end }).limit(1).keys();
    const key: string | undefined = res[0];
    if (key === undefined) return names;
    const tail = key.slice(prefix.length);
    const slash = tail.indexOf("/");
    if (slash <= 0) {
      // A key directly under the prefix (not in a child folder): step over just it.
      from = `${key}\0`;
      continue;
    }
    const name = tail.slice(0, slash);
    names.push(name);
    from = prefixRange(`${prefix}${name}/`).end;
  }
}
