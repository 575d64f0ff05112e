/**
 * Parses one JSON event line of an example process. The examples stamp each line with
 * `time` (ISO 8601 in UTC with milliseconds), the one time format the replicas and the SDK
 * log with; the harness adds `t`, the same instant in epoch milliseconds, so drills and tests
 * can do arithmetic on it. Throws on a line that is not a JSON object with a valid `time`.
 */
export function parseEventLine<T extends { readonly t: number }>(line: string): T {
  const o: unknown = JSON.parse(line);
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw new Error(`not an event line: ${line}`);
  const time = (o as { time?: unknown }).time;
  const t = typeof time === "string" ? Date.parse(time) : Number.NaN;
  if (!Number.isFinite(t)) throw new Error(`event line without a valid time: ${line}`);
  return { ...o, t } as unknown as T;
}
