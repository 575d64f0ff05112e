import type { TaskView } from "./task-record.js";

/** A position in a group's change log: resume after it. */
export interface WatchCursor {
  /** The leader epoch whose log the sequence number belongs to. */
  readonly epoch: number;
  /** The last change delivered. */
  readonly seq: number;
  /**
   * An etcd revision such that every durable change at or below it was delivered: a
   * watcher resuming at another leader gets the records changed after it.
   */
  readonly rev: number;
}

/** `<epoch>.<seq>.<rev>`, opaque to clients. */
export function formatCursor(c: WatchCursor): string {
  return `${c.epoch}.${c.seq}.${c.rev}`;
}

/** The cursor in `s`, or undefined when it is empty or not one of ours. */
export function parseCursor(s: string): WatchCursor | undefined {
  const m = /^(\d{1,16})\.(\d{1,16})\.(\d{1,16})$/.exec(s);
  if (m === null) return undefined;
  const [epoch, seq, rev] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (!Number.isSafeInteger(epoch) || !Number.isSafeInteger(seq) || !Number.isSafeInteger(rev))
    return undefined;
  return { epoch, seq, rev };
}

interface Change {
  readonly seq: number;
  readonly rev: number;
  readonly view: TaskView;
}

/** What a subscription hands out: the changes since the last pull. */
export interface ChangeBatch {
  readonly views: readonly TaskView[];
  /** The cursor after the last change in `views`. */
  readonly cursor: WatchCursor;
}

/** One watcher's live feed; see {@link TaskChangeLog.subscribe}. */
export interface ChangeSubscription {
  /** The cursor as of the subscription (what a snapshot taken now is consistent with). */
  readonly start: WatchCursor;
  /**
   * The changes since the last call, waiting until there is one. Rejects with `overflow`
   * when the watcher fell more than the buffer limit behind, and resolves undefined once
   * the log closed or `signal` aborted.
   */
  next(signal: AbortSignal): Promise<ChangeBatch | undefined>;
  close(): void;
}

/** Thrown by {@link ChangeSubscription.next} for a watcher that fell too far behind. */
export class WatchOverflow extends Error {
  override name = "WatchOverflow";
}

interface Subscriber {
  readonly filter: (id: string) => boolean;
  buffer: TaskView[];
  last: WatchCursor;
  overflow: boolean;
  wake: (() => void) | undefined;
}

/**
 * One group's recent task changes, in order, for WatchTasks: a bounded backlog a watcher
 * can resume from with its cursor, and live feeds with a bounded buffer each (a watcher
 * that falls further behind is ended, and resumes from its cursor). Memory only: a new
 * leader starts a new log (its epoch in the cursor tells them apart).
 */
export class TaskChangeLog {
  readonly #epoch: number;
  readonly #backlog: number;
  readonly #bufferLimit: number;
  readonly #ring: Change[] = [];
  #head = 0;
  #seq = 0;
  #rev = 0;
  readonly #subs = new Set<Subscriber>();
  #closed = false;

  constructor(o: { epoch: number; backlog: number; bufferLimit: number }) {
    this.#epoch = o.epoch;
    this.#backlog = o.backlog;
    this.#bufferLimit = o.bufferLimit;
  }

  /** The cursor after the latest change. */
  get cursor(): WatchCursor {
    return { epoch: this.#epoch, seq: this.#seq, rev: this.#rev };
  }

  /** Records a change; `rev` is the safe revision as of it (see {@link WatchCursor.rev}). */
  append(view: TaskView, rev: number): void {
    if (this.#closed) return;
    this.#seq += 1;
    if (rev > this.#rev) this.#rev = rev;
    if (this.#backlog > 0) {
      const change = { seq: this.#seq, rev: this.#rev, view };
      if (this.#ring.length < this.#backlog) this.#ring.push(change);
      else {
        this.#ring[this.#head] = change;
        this.#head = (this.#head + 1) % this.#backlog;
      }
    }
    const cursor = this.cursor;
    for (const s of this.#subs) {
      if (s.overflow || !s.filter(view.record.id)) continue;
      s.buffer.push(view);
      s.last = cursor;
      if (s.buffer.length > this.#bufferLimit) {
        s.overflow = true;
        s.buffer = [];
      }
      s.wake?.();
    }
  }

  /**
   * The changes after `cursor` that pass `filter`, or undefined when the log cannot tell
   * (another leader's cursor, one from the future, or one older than the backlog).
   */
  since(cursor: WatchCursor, filter: (id: string) => boolean): TaskView[] | undefined {
    if (cursor.epoch !== this.#epoch || cursor.seq > this.#seq) return undefined;
    if (cursor.seq === this.#seq) return [];
    const oldest = this.#ring.length === 0 ? this.#seq + 1 : (this.#ring[this.#head] as Change).seq;
    if (cursor.seq < oldest - 1) return undefined;
    const out: TaskView[] = [];
    for (let i = 0; i < this.#ring.length; i++) {
      const c = this.#ring[(this.#head + i) % this.#ring.length] as Change;
      if (c.seq > cursor.seq && filter(c.view.record.id)) out.push(c.view);
    }
    return out;
  }

  /** A live feed of the changes from now on that pass `filter`. */
  subscribe(filter: (id: string) => boolean): ChangeSubscription {
    const start = this.cursor;
    const s: Subscriber = { filter, buffer: [], last: start, overflow: false, wake: undefined };
    if (!this.#closed) this.#subs.add(s);
    const subs = this.#subs;
    const isClosed = () => this.#closed;
    return {
      start,
      async next(signal: AbortSignal): Promise<ChangeBatch | undefined> {
        while (s.buffer.length === 0 && !s.overflow && !isClosed() && !signal.aborted) {
          await new Promise<void>((resolve) => {
            const done = () => {
              signal.removeEventListener("abort", done);
              s.wake = undefined;
              resolve();
            };
            s.wake = done;
            signal.addEventListener("abort", done, { once: true });
          });
        }
        if (s.overflow) throw new WatchOverflow(`the watcher fell more than the buffer behind`);
        if (s.buffer.length === 0) return undefined;
        const views = s.buffer;
        s.buffer = [];
        return { views, cursor: s.last };
      },
      close() {
        subs.delete(s);
        s.wake?.();
      },
    };
  }

  /** Ends every feed (their `next` resolves undefined once drained). */
  close(): void {
    this.#closed = true;
    for (const s of this.#subs) s.wake?.();
    this.#subs.clear();
  }
}
