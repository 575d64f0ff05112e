/** etcd's own request counters, by gRPC method, from its Prometheus /metrics. */
export type MethodCounts = Map<string, number>;

/**
 * Sums `grpc_server_msg_received_total` over codes per method: for unary methods that is
 * one per request; for streams (LeaseKeepAlive, Watch) it counts messages, i.e. each
 * keep-alive sent.
 */
export async function scrapeEtcd(clientUrl: string): Promise<MethodCounts> {
  const res = await fetch(`${clientUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  const out: MethodCounts = new Map();
  const re = /^grpc_server_msg_received_total\{([^}]*)\}\s+(\S+)$/gm;
  for (const m of text.matchAll(re)) {
    const method = /grpc_method="([^"]+)"/.exec(m[1] ?? "")?.[1];
    if (method === undefined) continue;
    out.set(method, (out.get(method) ?? 0) + Number(m[2]));
  }
  return out;
}

export function diffCounts(a: MethodCounts, b: MethodCounts): MethodCounts {
  const out: MethodCounts = new Map();
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0) out.set(k, d);
  }
  return out;
}
