/** Group names and node ids: 1-128 characters of `[A-Za-z0-9._:-]` (safe in etcd keys and logs). */
const namePattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** Returns undefined when `value` is a valid group or node name, else why not. */
export function checkName(kind: "group" | "node_id", value: string): string | undefined {
  if (namePattern.test(value)) return undefined;
  if (value.length === 0) return `${kind} is empty`;
  if (value.length > 128) return `${kind} is longer than 128 characters`;
  return `${kind} ${JSON.stringify(value.slice(0, 40))} has characters outside [A-Za-z0-9._:-]`;
}
