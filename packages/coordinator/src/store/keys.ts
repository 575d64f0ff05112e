import { CoordinatorError } from "../errors.js";

/**
 * The etcd key layout. The coordinator's state lives under one namespace prefix so that
 * `etcdctl get --prefix <ns>/` shows the whole state (see the README); the records of the
 * built-in data source live under a sibling prefix of their own, the data namespace
 * (default `<ns>-data`), so that neither that command nor the leader's load ever reads them.
 *
 * ```
 * <ns>/election/leader/<leaseHex>         election candidates; the oldest (lowest create revision) leads
 * <ns>/config                             cluster settings safety depends on (session timeout, heartbeat, defaults)
 * <ns>/groups/<group>/config              optional operator settings {strategy, shards}
 * <ns>/groups/<group>/control             operator switches written by the CLI {repair, ...}
 * <ns>/groups/<group>/members/<nodeId>    member record, bound to that member's own lease
 * <ns>/groups/<group>/assignment          {version, phase, totalShards, strategy, owners, ...}, no lease
 * <ns>/auth/tokens/<group>/<id>           a bearer token: {role, salt, scrypt hash}, never the secret
 * <dataNs>/<group>/layout                 {buckets, maxRecordBytes}: how the group's records are laid out
 * <dataNs>/<group>/b/<bucket>/<id>        one record served by FetchShardData; bucket = shardOf(id, buckets), zero-padded
 * ```
 */
export interface KeyLayout {
  readonly namespace: string;
  readonly electionPrefix: string;
  readonly groupsPrefix: string;
  electionKey(leaseId: string): string;
  /** `<ns>/config`: the cluster settings record. */
  readonly clusterConfig: string;
  groupPrefix(group: string): string;
  config(group: string): string;
  control(group: string): string;
  membersPrefix(group: string): string;
  member(group: string, nodeId: string): string;
  assignment(group: string): string;
  /** Prefix of the built-in data source's records, outside `<ns>/` (default `<ns>-data`, no trailing slash). */
  readonly dataNamespace: string;
  /** `<dataNs>/<group>/`: every data key of one group (its layout and its records). */
  dataGroupPrefix(group: string): string;
  /** `<dataNs>/<group>/layout`: the group's `DataLayout` record (sharding/data-layout.ts). */
  dataLayout(group: string): string;
  /** `<dataNs>/<group>/b/<bucket>/`: the records of one bucket (`bucket` is the zero-padded label). */
  dataBucketPrefix(group: string, bucket: string): string;
  /** `<dataNs>/<group>/b/<bucket>/<id>`: one record. */
  dataRecord(group: string, bucket: string, id: string): string;
  /** `<ns>/auth/tokens/`: every token record (server/auth-tokens.ts). */
  readonly authTokensPrefix: string;
  /** `<ns>/auth/tokens/<group>/<id>`: one token record. */
  authToken(group: string, id: string): string;
  /** Splits a key under groupsPrefix into its group and the rest, or undefined. */
  parseGroupKey(key: string): { group: string; rest: string } | undefined;
}

/** Options of {@link keyLayout}. */
export interface KeyLayoutOptions {
  /**
   * Prefix of the data source's records; must not lie under `<ns>/` (the leader's load and
   * `etcdctl get --prefix <ns>/` would read it) nor contain the namespace.
   * @default `<ns>-data`
   */
  readonly dataNamespace?: string;
}

/**
 * Builds the layout for a namespace such as `/shardmgr` (a trailing slash is ignored).
 *
 * @example
 * ```ts
 * const keys = keyLayout("/shardmgr");
 * keys.assignment("billing");            // "/shardmgr/groups/billing/assignment"
 * keys.dataRecord("billing", "07", "42"); // "/shardmgr-data/billing/b/07/42"
 * ```
 */
export function keyLayout(namespace: string, options: KeyLayoutOptions = {}): KeyLayout {
  const ns = namespace.replace(/\/+$/, "");
  // With the root namespace ("/") every key starting with "/" is inside it.
  const dataNs = (options.dataNamespace ?? (ns === "" ? "data" : `${ns}-data`)).replace(/\/+$/, "");
  const overlaps =
    dataNs === "" || `${dataNs}/`.startsWith(`${ns}/`) || (ns !== "" && `${ns}/`.startsWith(`${dataNs}/`));
  if (overlaps)
    throw new CoordinatorError(
      "invalid_config",
      `data namespace ${JSON.stringify(dataNs)} must be a prefix of its own, outside ${JSON.stringify(`${ns}/`)} and not containing it`,
    );
  const dataGroupPrefix = (g: string) => `${dataNs}/${g}/`;
  const electionPrefix = `${ns}/election/leader/`;
  const groupsPrefix = `${ns}/groups/`;
  const groupPrefix = (g: string) => `${groupsPrefix}${g}/`;
  return {
    namespace: ns,
    electionPrefix,
    groupsPrefix,
    // Hex lease ids, as Go's concurrency.Election writes them, so
    // `etcdctl elect -l <ns>/election/leader` reads the same keys.
    electionKey: (leaseId) => `${electionPrefix}${BigInt(leaseId).toString(16)}`,
    clusterConfig: `${ns}/config`,
    authTokensPrefix: `${ns}/auth/tokens/`,
    authToken: (g, id) => `${ns}/auth/tokens/${g}/${id}`,
    groupPrefix,
    config: (g) => `${groupPrefix(g)}config`,
    control: (g) => `${groupPrefix(g)}control`,
    membersPrefix: (g) => `${groupPrefix(g)}members/`,
    member: (g, n) => `${groupPrefix(g)}members/${n}`,
    assignment: (g) => `${groupPrefix(g)}assignment`,
    dataNamespace: dataNs,
    dataGroupPrefix,
    dataLayout: (g) => `${dataGroupPrefix(g)}layout`,
    dataBucketPrefix: (g, b) => `${dataGroupPrefix(g)}b/${b}/`,
    dataRecord: (g, b, id) => `${dataGroupPrefix(g)}b/${b}/${id}`,
    parseGroupKey(key) {
      if (!key.startsWith(groupsPrefix)) return undefined;
      const tail = key.slice(groupsPrefix.length);
      const slash = tail.indexOf("/");
      if (slash <= 0) return undefined;
      return { group: tail.slice(0, slash), rest: tail.slice(slash + 1) };
    },
  };
}
