import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { CoordinatorError } from "../errors.js";

/**
 * How the CLI reaches a replica's HTTP listener beyond loopback: the bearer token of
 * `--http-token-file` (the replica's own flag of that name) and, for a replica serving HTTPS,
 * the CA that signed its certificate (`--http-ca`; the system CAs without it).
 */
export interface ReplicaHttpAuth {
  readonly token?: string | undefined;
  readonly ca?: Buffer | string | string[] | undefined;
}

/** A replica's HTTP address with the scheme its election value announces. */
export interface ReplicaHttpTarget {
  /** `host:port`. */
  readonly http: string;
  readonly tls: boolean;
}

/**
 * One request to a replica's HTTP listener; resolves with the response once its status is
 * 2xx, rejects with CoordinatorError("leader_unavailable") naming the status otherwise (401
 * says which flag is missing).
 *
 * @example
 * ```ts
 * const res = await replicaRequest({ http: "10.0.0.7:8080", tls: true }, "/events", { token, ca }, { signal });
 * ```
 */
export function replicaRequest(
  target: ReplicaHttpTarget,
  path: string,
  auth: ReplicaHttpAuth,
  o: {
    readonly method?: "GET" | "POST";
    readonly signal?: AbortSignal;
    readonly accept?: string;
    readonly headers?: Readonly<Record<string, string>>;
  } = {},
): Promise<IncomingMessage> {
  const url = `${target.tls ? "https" : "http"}://${target.http}${path}`;
  const headers: Record<string, string> = { ...o.headers, accept: o.accept ?? "application/json" };
  if (auth.token !== undefined) headers.authorization = `Bearer ${auth.token}`;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const options = {
      method: o.method ?? "GET",
      headers,
      ...(o.signal === undefined ? {} : { signal: o.signal }),
    };
    const onResponse = (res: IncomingMessage) => {
      const code = res.statusCode ?? 0;
      if (code >= 200 && code < 300) return resolve(res);
      res.resume();
      const hint =
        code === 401
          ? auth.token === undefined
            ? ": this replica wants a token from beyond loopback (--http-token-file)"
            : ": the token was refused (--http-token-file must hold the replica's token)"
          : "";
      reject(new CoordinatorError("leader_unavailable", `${url} answered HTTP ${code}${hint}`));
    };
    const req = target.tls
      ? httpsRequest(url, { ...options, ...(auth.ca === undefined ? {} : { ca: auth.ca }) }, onResponse)
      : httpRequest(url, options, onResponse);
    req.once("error", (e) =>
      reject(
        o.signal?.aborted === true
          ? e
          : new CoordinatorError("leader_unavailable", `cannot reach ${url}: ${e.message}`, { cause: e }),
      ),
    );
    req.end();
  });
}

/** The whole body of a response, as text. */
export async function readBody(res: IncomingMessage): Promise<string> {
  let body = "";
  res.setEncoding("utf8");
  for await (const chunk of res) body += chunk as string;
  return body;
}

/**
 * The `data` of each server-sent event of a response (`text/event-stream`), as it comes; the
 * lines of a multi-line `data` are joined with "\n", events without data are skipped.
 *
 * @example
 * ```ts
 * for await (const data of sseData(res)) console.log(JSON.parse(data));
 * ```
 */
export async function* sseData(res: IncomingMessage): AsyncGenerator<string> {
  res.setEncoding("utf8");
  let buf = "";
  for await (const chunk of res) {
    buf += chunk as string;
    for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
      const data = buf
        .slice(0, i)
        .split("\n")
        .filter((l) => l.startsWith("data: "))
        .map((l) => l.slice(6))
        .join("\n");
      buf = buf.slice(i + 2);
      if (data !== "") yield data;
    }
  }
}
