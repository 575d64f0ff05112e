import { type Logger, pino } from "pino";

/**
 * One JSON line per event on stdout (pino), every line carrying the replica id. Role and
 * leader epoch are bound as they change (`log.child({ role, leaderEpoch })`).
 */
export function createLogger(replicaId: string, level: string = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({ level, base: { replica: replicaId }, timestamp: pino.stdTimeFunctions.isoTime });
}
