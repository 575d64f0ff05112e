import { type Logger, pino } from "pino";

/**
 * One JSON line per event on stdout (pino), every line carrying the replica id. A replica
 * adds its role and leader epoch to each line as the line is written (a log formatter in
 * `Replica`), so they are those of that moment.
 */
export function createLogger(replicaId: string, level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ level, base: { replica: replicaId }, timestamp: pino.stdTimeFunctions.isoTime });
}
