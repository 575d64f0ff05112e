import { request } from "node:http";

/** The part of etcd's `Maintenance.Status` answer the harness uses. */
export interface MemberStatus {
  /** This member's raft id (decimal string: JSON carries etcd's uint64 ids as strings). */
  readonly memberId: string;
  /** The leader's raft id as this member sees it; "0" when it knows of none. */
  readonly leaderId: string;
}

const STATUS_TIMEOUT_MS = 500;

/**
 * Asks a member for its id and its view of the leader through etcd's JSON gateway
 * (`POST /v3/maintenance/status`). Resolves `undefined` when the member does not
 * answer promptly (down, paused) or answers something unexpected: callers use
 * this for best-effort ordering, never for correctness.
 */
export function fetchMemberStatus(clientUrl: string): Promise<MemberStatus | undefined> {
  return new Promise((resolve) => {
    const req = request(
      new URL("/v3/maintenance/status", clientUrl),
      {
        method: "POST",
        agent: false,
        timeout: STATUS_TIMEOUT_MS,
        headers: { "content-type": "application/json" },
      },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve(parseStatus(body)));
        response.on("error", () => resolve(undefined));
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(undefined));
    req.end("{}");
  });
}

function parseStatus(body: string): MemberStatus | undefined {
  try {
    const parsed = JSON.parse(body) as { header?: { member_id?: unknown }; leader?: unknown };
    const memberId = parsed.header?.member_id;
    const leaderId = parsed.leader ?? "0";
    if (typeof memberId !== "string" || typeof leaderId !== "string") return undefined;
    return { memberId, leaderId };
  } catch {
    return undefined;
  }
}
