/**
 * The etcd key layout, all under one namespace prefix so that
 * `etcdctl get --prefix <ns>/` shows the whole state (see the README).
 *
 * ```
 * <ns>/election/leader/<leaseHex>       election candidates; the oldest (lowest create revision) leads
 * <ns>/config                           cluster settings safety depends on (session timeout, heartbeat, defaults)
 * <ns>/groups/<group>/config            optional operator settings {strategy, shards}
 * <ns>/groups/<group>/control           operator switches written by the CLI {repair, ...}
 * <ns>/groups/<group>/members/<nodeId>  member record, bound to that member's own lease
 * <ns>/groups/<group>/assignment        {version, phase, totalShards, strategy, owners, ...}, no lease
 * <ns>/groups/<group>/data/<id>         records served by FetchShardData (built-in data source)
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
  dataPrefix(group: string): string;
  data(group: string, id: string): string;
  /** Splits a key under groupsPrefix into its group and the rest, or undefined. */
  parseGroupKey(key: string): { group: string; rest: string } | undefined;
}

/** Builds the layout for a namespace such as `/shardmgr` (a trailing slash is ignored). */
export function keyLayout(namespace: string): KeyLayout {
  const ns = namespace.replace(/\/+$/, "");
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
    groupPrefix,
    config: (g) => `${groupPrefix(g)}config`,
    control: (g) => `${groupPrefix(g)}control`,
    membersPrefix: (g) => `${groupPrefix(g)}members/`,
    member: (g, n) => `${groupPrefix(g)}members/${n}`,
    assignment: (g) => `${groupPrefix(g)}assignment`,
    dataPrefix: (g) => `${groupPrefix(g)}data/`,
    data: (g, id) => `${groupPrefix(g)}data/${id}`,
    parseGroupKey(key) {
      if (!key.startsWith(groupsPrefix)) return undefined;
      const tail = key.slice(groupsPrefix.length);
      const slash = tail.indexOf("/");
      if (slash <= 0) return undefined;
      return { group: tail.slice(0, slash), rest: tail.slice(slash + 1) };
    },
  };
}
