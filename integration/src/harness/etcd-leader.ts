import { setTimeout as sleep } from "node:timers/promises";
import { HarnessError } from "./errors.js";
import type { EtcdMember } from "./etcd-member.js";
import { fetchMemberStatus } from "./etcd-status.js";

/**
 * The member that is the raft leader right now, found with etcd's endpoint status API
 * (what `etcdctl endpoint status` shows): the member whose own id is the leader id the
 * running members report. Polls until they agree on a leader that is one of `members`,
 * e.g. during an election; rejects after `timeoutMs`.
 *
 * @example
 * ```ts
 * const leader = await findEtcdLeader(cluster.members);
 * await leader.kill();
 * ```
 */
export async function findEtcdLeader(
  members: readonly EtcdMember[],
  timeoutMs = 10_000,
): Promise<EtcdMember> {
  const deadline = performance.now() + timeoutMs;
  let seen = "";
  while (performance.now() < deadline) {
    const running = members.filter((m) => m.running && !m.paused);
    const statuses = await Promise.all(running.map((m) => fetchMemberStatus(m.clientUrl)));
    const leaderIds = new Set(
      statuses.map((s) => s?.leaderId).filter((id) => id !== undefined && id !== "0"),
    );
    seen = JSON.stringify(statuses);
    if (leaderIds.size === 1) {
      const [leaderId] = leaderIds;
      const index = statuses.findIndex((s) => s?.memberId === leaderId);
      const leader = running[index];
      if (index >= 0 && leader !== undefined) return leader;
    }
    await sleep(50);
  }
  throw new HarnessError(`no etcd leader agreed on within ${timeoutMs} ms (statuses: ${seen})`);
}
