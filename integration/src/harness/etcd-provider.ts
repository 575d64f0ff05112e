import { HarnessConfigError } from "./errors.js";

/** How test etcd members are run: local `etcd` processes, or Docker containers. */
export type EtcdProvider = "binary" | "testcontainers";

/** Environment variable that selects the provider when the caller does not. */
export const ETCD_PROVIDER_ENV = "ETCD_PROVIDER";

const PROVIDERS: readonly EtcdProvider[] = ["binary", "testcontainers"];

/**
 * Picks the provider: an explicit `requested` wins, then `$ETCD_PROVIDER`, then
 * `"binary"`. An unknown environment value is an error rather than a silent
 * fallback, so a CI typo cannot quietly test the other provider.
 */
export function resolveEtcdProvider(
  requested?: EtcdProvider,
  env: NodeJS.ProcessEnv = process.env,
): EtcdProvider {
  if (requested !== undefined) return requested;
  const fromEnv = env[ETCD_PROVIDER_ENV]?.trim();
  if (fromEnv === undefined || fromEnv === "") return "binary";
  if (isEtcdProvider(fromEnv)) return fromEnv;
  throw new HarnessConfigError(
    `${ETCD_PROVIDER_ENV}=${JSON.stringify(fromEnv)} is not one of ${PROVIDERS.join(", ")}`,
  );
}

function isEtcdProvider(value: string): value is EtcdProvider {
  return (PROVIDERS as readonly string[]).includes(value);
}
