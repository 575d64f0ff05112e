import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";

/** Statuses that refuse a client (as opposed to ending a stream for a reason of ours). */
export function isRefusal(code: status): boolean {
  return (
    code === status.ALREADY_EXISTS ||
    code === status.INVALID_ARGUMENT ||
    code === status.RESOURCE_EXHAUSTED ||
    code === status.PERMISSION_DENIED ||
    code === status.UNAUTHENTICATED ||
    code === status.DEADLINE_EXCEEDED
  );
}

interface Window {
  readonly startedAt: number;
  repeats: number;
}

/**
 * Logs refusals so that a client retrying one in a loop cannot flood the log: the first
 * refusal of a kind (code, group, node) in a window is logged at info; repeats inside the
 * window go to debug and are counted, and the count is logged at info with the next refusal
 * after the window (`refusals_repeated`).
 */
export class RefusalLog {
  readonly #log: Logger;
  readonly #windowMs: number;
  readonly #windows = new Map<string, Window>();

  constructor(log: Logger, windowMs = 60_000) {
    this.#log = log;
    this.#windowMs = windowMs;
  }

  refused(
    entry: {
      readonly code: string;
      readonly group?: string | undefined;
      readonly node?: string | undefined;
    } & Record<string, unknown>,
    now: number,
  ): void {
    const key = `${entry.code}\u0000${entry.group ?? ""}\u0000${entry.node ?? ""}`;
    const w = this.#windows.get(key);
    if (w !== undefined && now - w.startedAt < this.#windowMs) {
      w.repeats += 1;
      this.#log.debug(entry);
      return;
    }
    if (w !== undefined && w.repeats > 0)
      this.#log.info({
        event: "refusals_repeated",
        code: entry.code,
        group: entry.group,
        node: entry.node,
        count: w.repeats,
        windowMs: this.#windowMs,
      });
    this.#windows.set(key, { startedAt: now, repeats: 0 });
    if (this.#windows.size > 10_000) this.#prune(now);
    this.#log.info(entry);
  }

  #prune(now: number): void {
    for (const [k, w] of this.#windows) if (now - w.startedAt >= this.#windowMs) this.#windows.delete(k);
  }
}
