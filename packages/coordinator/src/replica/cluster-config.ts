import type { Etcd3, Watcher } from "etcd3";
import type { Logger } from "pino";
import { CoordinatorError } from "../errors.js";
import type { FencedStore } from "../leadership/fenced-store.js";
import type { KeyLayout } from "../store/keys.js";
import { type ClusterSettings, clusterSettingsSchema, parseRecord } from "../store/records.js";
import type { ReplicaOptions } from "./replica-options.js";
import { SettingsTracker } from "./settings.js";

/** The settings a replica's flags ask for, as a record. */
export function settingsFromOptions(o: ReplicaOptions, by: string): ClusterSettings {
  return {
    sessionTimeoutMs: o.sessionTimeoutMs,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    strategy: o.strategy,
    shards: o.shards,
    updatedAt: new Date().toISOString(),
    updatedBy: by,
  };
}

/** Why `s` cannot be applied by a replica with these options (its leader TTL), if it cannot. */
export function unsafeFor(s: ClusterSettings, o: ReplicaOptions): string | undefined {
  if (s.sessionTimeoutMs <= 2 * s.heartbeatIntervalMs)
    return `session timeout ${s.sessionTimeoutMs} ms is not above two heartbeat intervals`;
  // A failover takes up to the leader TTL plus a reconnect; a shorter session would fence
  // every worker during each failover.
  if (s.sessionTimeoutMs <= o.leaderTtlSec * 1000 + s.heartbeatIntervalMs)
    return `session timeout ${s.sessionTimeoutMs} ms is not above this replica's leader TTL plus a heartbeat interval`;
  if (o.memberLeaseTtlSec * 1000 <= s.sessionTimeoutMs)
    return `session timeout ${s.sessionTimeoutMs} ms is not below this replica's member lease TTL (${o.memberLeaseTtlSec} s)`;
  return undefined;
}

const compared = ["sessionTimeoutMs", "heartbeatIntervalMs", "strategy", "shards"] as const;

/** The settings that differ between two records, as `name: ours -> stored`. */
export function settingsDiff(ours: ClusterSettings, stored: ClusterSettings): string[] {
  return compared.filter((k) => ours[k] !== stored[k]).map((k) => `${k}: ${ours[k]} -> ${stored[k]}`);
}

/**
 * The cluster settings record (`<ns>/config`) for one leadership. Safety depends on every
 * leader using the same session timeout, heartbeat interval and defaults: a new leader with
 * a shorter session timeout would expel workers before the fence its predecessor gave them
 * runs out. So the record, not a replica's flags, is authoritative: the first leader writes
 * it from its flags; a later leader whose flags differ adopts the stored values and says so
 * in one log line; `coordinator config set` changes it, and the leader applies the change
 * through {@link SettingsTracker}.
 */
export class ClusterConfig {
  readonly tracker: SettingsTracker;
  readonly #watcher: Watcher;

  private constructor(tracker: SettingsTracker, watcher: Watcher) {
    this.tracker = tracker;
    this.#watcher = watcher;
  }

  static async start(o: {
    client: Etcd3;
    keys: KeyLayout;
    store: FencedStore;
    options: ReplicaOptions;
    log: Logger;
    takeoverAt: number;
    now: () => number;
  }): Promise<ClusterConfig> {
    const { client, keys, store, options, log } = o;
    const ours = settingsFromOptions(options, options.id);
    const res = await client.get(keys.clusterConfig).exec();
    const kv = res.kvs[0];
    let current: ClusterSettings;
    if (kv === undefined) {
      // Created only if still absent: two replicas may start at once, one record wins.
      await store.commit(store.client.put(keys.clusterConfig).value(JSON.stringify(ours)));
      current = ours;
      log.info({ event: "cluster_settings_created", settings: ours });
    } else {
      try {
        current = parseRecord(clusterSettingsSchema, keys.clusterConfig, kv.value.toString());
      } catch (e) {
        // A record no one can read: refuse to lead rather than guess (every replica would).
        throw new CoordinatorError(
          "invalid_data",
          `${CoordinatorError.from(e).message}; fix it with \`coordinator config set\``,
        );
      }
      const diff = settingsDiff(ours, current);
      if (diff.length > 0)
        log.warn({
          event: "cluster_settings_adopted",
          why: "the flags of this replica differ from the cluster's settings in etcd; the cluster's apply (change them with `coordinator config set`)",
          differences: diff,
        });
    }
    const tracker = new SettingsTracker(current, o.takeoverAt);
    const watcher = await client
      .watch()
      .key(keys.clusterConfig)
      .startRevision(String(BigInt(res.header.revision) + 1n))
      .create();
    watcher.on("put", (put) => {
      try {
        const next = parseRecord(clusterSettingsSchema, keys.clusterConfig, put.value.toString());
        const unsafe = unsafeFor(next, options);
        if (unsafe !== undefined) {
          log.error({
            event: "cluster_settings_rejected",
            err: unsafe,
            action: "keeping the current settings",
          });
          return;
        }
        const diff = settingsDiff(tracker.current, next);
        tracker.update(next, o.now());
        if (diff.length > 0)
          log.warn({ event: "cluster_settings_changed", differences: diff, by: next.updatedBy });
      } catch (e) {
        log.error({
          event: "cluster_settings_invalid",
          err: String(e),
          action: "keeping the current settings",
        });
      }
    });
    watcher.on("error", (err) => log.warn({ event: "cluster_settings_watch_error", err: String(err) }));
    return new ClusterConfig(tracker, watcher);
  }

  async close(): Promise<void> {
    await this.#watcher.cancel().catch(() => undefined);
  }
}
