import type { KeyLayout } from "../store/keys.js";

/**
 * Where tasks live in etcd, beside the group's other keys:
 *
 * ```
 * <ns>/groups/<group>/tasks/<taskId>          the task record (JSON); finished ones on a retention lease
 * <ns>/groups/<group>/task-payloads/<taskId>  the payload's raw bytes, from submit to the final state
 * ```
 */
export interface TaskKeys {
  tasksPrefix(group: string): string;
  task(group: string, id: string): string;
  payloadsPrefix(group: string): string;
  payload(group: string, id: string): string;
  /** The task id of a key under tasksPrefix(group), or undefined. */
  taskIdOf(group: string, key: string): string | undefined;
}

/** The task keys of a namespace's layout. */
export function taskKeys(keys: KeyLayout): TaskKeys {
  const tasksPrefix = (g: string) => `${keys.groupPrefix(g)}tasks/`;
  const payloadsPrefix = (g: string) => `${keys.groupPrefix(g)}task-payloads/`;
  return {
    tasksPrefix,
    task: (g, id) => `${tasksPrefix(g)}${id}`,
    payloadsPrefix,
    payload: (g, id) => `${payloadsPrefix(g)}${id}`,
    taskIdOf(g, key) {
      const p = tasksPrefix(g);
      if (!key.startsWith(p)) return undefined;
      const id = key.slice(p.length);
      return id.length > 0 && !id.includes("/") ? id : undefined;
    },
  };
}
