import { createHash, randomBytes } from "node:crypto";
import { z } from "zod";
import { parseRecord } from "../store/records.js";

/**
 * The task record, `<ns>/groups/<g>/tasks/<taskId>`: readable JSON, one per task, rewritten
 * by a fenced transaction at each change that matters for safety (submit, dispatch,
 * requeue, cancel request, final state). `running` and progress live in the leader's memory
 * only; etcd shows such a task as `dispatched`.
 *
 * The payload lives BESIDE the record, as the raw bytes of `<ns>/groups/<g>/task-payloads/<taskId>`
 * (`etcdctl get` prints text payloads as they are). It is written once, with the record, at
 * submit, and deleted with the final write: the record, which is rewritten at each change,
 * stays small (no 64 KiB payload copied per dispatch), and loading unfinished tasks after a
 * failover reads records, not payloads. `payloadSha256` makes a resubmission comparable
 * without reading the payload back. The result (at most --max-task-bytes) lives INSIDE the
 * final record, as text when it is printable UTF-8 and base64 otherwise.
 */

/** Every state; the last three are final. */
export const taskStates = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled"] as const;
export type TaskStateName = (typeof taskStates)[number];

export const finalTaskStates: ReadonlySet<TaskStateName> = new Set(["succeeded", "failed", "cancelled"]);

/** Whether `s` ends the task (nothing changes it afterwards). */
export function isFinalState(s: TaskStateName): boolean {
  return finalTaskStates.has(s);
}

export const taskPlacements = ["balanced", "shard"] as const;
export type TaskPlacementName = (typeof taskPlacements)[number];

/** Why an attempt ended without success. */
export const taskErrorReasons = ["handler", "timeout", "worker_lost"] as const;
export type TaskErrorReasonName = (typeof taskErrorReasons)[number];

/** Bytes as readable JSON: the text when it is printable UTF-8, else base64. */
export const blobSchema = z.union([
  z.object({ text: z.string() }).strict(),
  z.object({ base64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/) }).strict(),
]);
export type Blob = z.infer<typeof blobSchema>;

const utf8 = new TextDecoder("utf-8", { fatal: true });
// Printable: no C0 controls other than tab, newline and carriage return, no DEL.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find control characters
const nonPrintable = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** Encodes bytes for a record. */
export function encodeBlob(bytes: Uint8Array): Blob {
  try {
    const text = utf8.decode(bytes);
    if (!nonPrintable.test(text)) return { text };
  } catch {
    // not UTF-8: base64 below
  }
  return { base64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64") };
}

/** Decodes what {@link encodeBlob} wrote. */
export function decodeBlob(blob: Blob): Uint8Array {
  if ("text" in blob) return new TextEncoder().encode(blob.text);
  return new Uint8Array(Buffer.from(blob.base64, "base64"));
}

const labelKey = z.string().min(1).max(128);
const labelValue = z.string().max(256);

export const taskFailureSchema = z.object({
  message: z.string(),
  reason: z.enum(taskErrorReasons),
  retryable: z.boolean(),
  /** The attempt that failed. */
  attempt: z.number().int().nonnegative(),
});
export type TaskFailure = z.infer<typeof taskFailureSchema>;

const taskIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

export const taskRecordSchema = z.object({
  id: z.string().regex(taskIdPattern),
  group: z.string().regex(taskIdPattern),
  state: z.enum(taskStates),
  /** Dispatches so far; the current attempt while dispatched or running. */
  attempt: z.number().int().nonnegative(),
  maxAttempts: z.number().int().min(1).max(100),
  placement: z.enum(taskPlacements),
  selector: z.record(labelKey, labelValue),
  /** 1 (highest) to 5. */
  priority: z.number().int().min(1).max(5),
  /** Execution timeout of one attempt; 0: none. */
  timeoutMs: z.number().int().nonnegative(),
  /** Node id of the current or last attempt's worker; null before the first dispatch. */
  worker: z.string().nullable(),
  /** Epoch of the leader that wrote this version of the record. */
  leaderEpoch: z.number().int().nonnegative(),
  payloadBytes: z.number().int().nonnegative(),
  /** sha256 of the payload, hex: a resubmission is compared against it. */
  payloadSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Submission order within the group: FIFO within a priority, across failovers too. */
  seq: z.number().int().nonnegative(),
  result: blobSchema.optional(),
  error: taskFailureSchema.optional(),
  /** A cancel was asked for while the task was dispatched or running. */
  cancelRequested: z.boolean().optional(),
  /** ISO times. */
  createdAt: z.string(),
  updatedAt: z.string(),
  /** When the current attempt was dispatched (ISO), while dispatched or running. */
  dispatchedAt: z.string().optional(),
});
export type TaskRecord = z.infer<typeof taskRecordSchema>;

/** Parses a task record read from etcd, or throws CoordinatorError("invalid_data") naming the key. */
export function parseTaskRecord(key: string, raw: string): TaskRecord {
  return parseRecord(taskRecordSchema, key, raw);
}

/** The JSON stored in etcd (fields in schema order, so `etcdctl get` reads the same way each time). */
export function serializeTaskRecord(r: TaskRecord): string {
  const ordered: Record<string, unknown> = {};
  for (const k of Object.keys(taskRecordSchema.shape)) {
    const v = (r as Record<string, unknown>)[k];
    if (v !== undefined) ordered[k] = v;
  }
  return JSON.stringify(ordered);
}

/** A task as the leader shows it: the record as last replayed, and its attempt's progress. */
export interface TaskView {
  readonly record: TaskRecord;
  /** The running attempt's last progress report (the leader's memory only). */
  readonly progress: { readonly fraction: number; readonly message: string } | undefined;
}

/** Returns undefined when `id` is a valid task id (the node-id charset), else why not. */
export function checkTaskId(id: string): string | undefined {
  if (taskIdPattern.test(id)) return undefined;
  if (id.length === 0) return "task id is empty";
  if (id.length > 128) return "task id is longer than 128 characters";
  return `task id ${JSON.stringify(id.slice(0, 40))} has characters outside [A-Za-z0-9._:-]`;
}

/**
 * A fresh task id: the time in base 36 (so generated ids list roughly in submission order),
 * then 64 random bits.
 */
export function generateTaskId(now: number = Date.now()): string {
  return `${now.toString(36).padStart(9, "0")}-${randomBytes(8).toString("hex")}`;
}

/** sha256 of a payload, hex. */
export function payloadDigest(payload: Uint8Array): string {
  return createHash("sha256").update(payload).digest("hex");
}
