/** Group names and node ids: 1-128 characters of `[A-Za-z0-9._:-]` (safe in etcd keys and logs). */
const namePattern = /^[A-Za-z0-9._:-]{1,128}$/;

/** Returns undefined when `value` is a valid group or node name, else why not. */
export function checkName(kind: "group" | "node_id", value: string): string | undefined {
  if (namePattern.test(value)) return undefined;
  if (value.length === 0) return `${kind} is empty`;
  if (value.length > 128) return `${kind} is longer than 128 characters`;
  return `${kind} ${JSON.stringify(value.slice(0, 40))} has characters outside [A-Za-z0-9._:-]`;
}

/** Labels are stored in the member record: at most 64, keys up to 63 and values up to 256 characters. */
export function checkLabels(labels: Readonly<Record<string, string>>): string | undefined {
  const entries = Object.entries(labels);
  if (entries.length > 64) return `${entries.length} labels, more than 64`;
  for (const [k, v] of entries) {
    if (!/^[A-Za-z0-9._/-]{1,63}$/.test(k))
      return `label key ${JSON.stringify(k.slice(0, 40))} is not 1-63 characters of [A-Za-z0-9._/-]`;
    if (v.length > 256) return `label ${k} has a value longer than 256 characters`;
  }
  return undefined;
}
