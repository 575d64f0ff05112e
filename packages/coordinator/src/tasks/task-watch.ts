import { TaskError } from "./task-error.js";
import type { WatchBatch } from "./task-host.js";
import type { TaskPersistence } from "./task-persistence.js";
import type { TaskQueue } from "./task-queue.js";
import type { TaskView } from "./task-record.js";
import { formatCursor, parseCursor, type TaskChangeLog, WatchOverflow } from "./task-watch-log.js";

/** Tasks per WatchTasks message in a snapshot. */
const snapshotChunk = 500;

/** What one WatchTasks stream reads from. */
export interface WatchSource {
  readonly group: string;
  /** Only these tasks; empty: every task of the group. */
  readonly ids: readonly string[];
  readonly cursor: string;
  readonly signal: AbortSignal;
  readonly log: TaskChangeLog;
  readonly queue: TaskQueue;
  readonly persistence: TaskPersistence;
}

/**
 * One WatchTasks stream: a replay from the cursor when the change log still holds it,
 * else a snapshot; then every change as it happens. The live feed is subscribed before
 * the snapshot is taken, so nothing falls between them (a change may appear in both; the
 * later entry is the newer). Returns when the signal aborts or the log closes (the
 * caller tells the two apart); throws TaskError("aborted") when the watcher falls behind.
 */
export async function* watchGroup(w: WatchSource): AsyncGenerator<WatchBatch> {
  const wanted = w.ids.length === 0 ? undefined : new Set(w.ids);
  const filter = wanted === undefined ? () => true : (id: string) => wanted.has(id);
  const sub = w.log.subscribe(filter);
  try {
    const start = formatCursor(sub.start);
    const from = parseCursor(w.cursor);
    const replay = from === undefined ? undefined : w.log.since(from, filter);
    if (replay !== undefined) {
      yield { tasks: replay, cursor: start, synced: true };
    } else {
      const chunks: TaskView[][] = [];
      let chunk: TaskView[] = [];
      const add = (v: TaskView) => {
        chunk.push(v);
        if (chunk.length === snapshotChunk) {
          chunks.push(chunk);
          chunk = [];
        }
      };
      if (wanted !== undefined) {
        const missing: string[] = [];
        for (const id of wanted) {
          const v = w.queue.get(id);
          if (v !== undefined) add(v);
          else missing.push(id);
        }
        if (missing.length > 0)
          for (const t of (await w.persistence.read(w.group, missing)).values())
            add(w.queue.get(t.record.id) ?? { record: t.record, progress: undefined });
      } else {
        const seen = new Set<string>();
        for (const v of w.queue.unfinishedTasks()) {
          seen.add(v.record.id);
          add(v);
        }
        // Resuming another leader's (or an old) cursor: what changed durably since its
        // revision, finished tasks included, so a watcher misses no final state.
        if (from !== undefined) {
          let afterId = "";
          for (;;) {
            const page = await w.persistence.scan(w.group, {
              afterId,
              limit: 500,
              minModRevision: from.rev + 1,
            });
            for (const t of page.tasks)
              if (!seen.has(t.record.id))
                add(w.queue.get(t.record.id) ?? { record: t.record, progress: undefined });
            if (!page.more) break;
            afterId = page.lastId;
          }
        }
      }
      if (chunk.length > 0 || chunks.length === 0) chunks.push(chunk);
      for (let i = 0; i < chunks.length; i++) {
        const last = i === chunks.length - 1;
        // Only the snapshot's last message carries the cursor: resuming from the middle
        // of a snapshot must start it again, not skip its rest.
        yield { tasks: chunks[i] as TaskView[], cursor: last ? start : "", synced: last };
      }
    }
    for (;;) {
      let batch: Awaited<ReturnType<typeof sub.next>>;
      try {
        batch = await sub.next(w.signal);
      } catch (e) {
        if (e instanceof WatchOverflow)
          throw new TaskError("aborted", "this watcher fell too far behind; resume with the last cursor");
        throw e;
      }
      if (batch === undefined) return;
      yield { tasks: batch.views, cursor: formatCursor(batch.cursor), synced: false };
    }
  } finally {
    sub.close();
  }
}
