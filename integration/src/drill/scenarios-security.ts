import { status } from "@grpc/grpc-js";
import { keyLayout, newToken } from "@org/coordinator";
import { RawStream } from "../support/raw-client.js";
import { sleep } from "./scenario-helpers.js";
import type { Scenario } from "./scenarios.js";

/** Credentials that must be refused while the drill's workers (holding a valid token) run. */
export const securityScenarios: readonly Scenario[] = [
  {
    name: "bad-credentials",
    description:
      "replicas with --auth tokens: no, malformed, wrong, other-group, submit-only and revoked tokens at the leader while the workers run",
    options: { auth: "tokens" },
    async run(env) {
      const leader = await env.rm.waitForLeader();
      const problems: string[] = [];
      const keys = keyLayout(env.namespace);
      const mint = async (group: string, role: "worker" | "submit") => {
        const t = await newToken(group, role);
        await env.client.put(keys.authToken(group, t.record.id)).value(JSON.stringify(t.record));
        return t;
      };
      const other = await mint("elsewhere", "worker");
      const submit = await mint(env.group, "submit");
      const revoked = await mint(env.group, "worker");
      await env.client.delete().key(keys.authToken(env.group, revoked.record.id)).exec();
      await sleep(500); // the replicas' watches apply the delete
      const valid = env.workerToken?.token ?? "";
      const expectStatus = async (
        what: string,
        want: status,
        headers: Record<string, string>,
        node: string,
      ) => {
        const s = new RawStream(leader.address, headers);
        s.hello(env.group, node);
        const got = await Promise.race([s.ended, sleep(10_000).then(() => undefined)]);
        s.close();
        if (got?.code !== want)
          problems.push(
            `${what}: expected ${status[want]}, got ${got === undefined ? "nothing" : status[got.code]}`,
          );
        for (const secret of [valid, other.token, submit.token, revoked.token])
          if (secret !== "" && got?.details.includes(secret) === true)
            problems.push(`${what}: the details quote a token`);
      };
      await expectStatus("no token", status.UNAUTHENTICATED, {}, "intruder-1");
      await expectStatus(
        "malformed token",
        status.UNAUTHENTICATED,
        { authorization: "Bearer nope" },
        "intruder-2",
      );
      await expectStatus(
        "wrong secret",
        status.UNAUTHENTICATED,
        { authorization: `Bearer ${valid.slice(0, -4)}AAAA` },
        "intruder-3",
      );
      await expectStatus(
        "revoked token",
        status.UNAUTHENTICATED,
        { authorization: `Bearer ${revoked.token}` },
        "intruder-4",
      );
      await expectStatus(
        "another group's token",
        status.PERMISSION_DENIED,
        { authorization: `Bearer ${other.token}` },
        "intruder-5",
      );
      await expectStatus(
        "a submit token",
        status.PERMISSION_DENIED,
        { authorization: `Bearer ${submit.token}` },
        "intruder-6",
      );
      // A valid token may not take a live worker's node id either.
      await expectStatus(
        "valid token, live node id",
        status.ALREADY_EXISTS,
        { authorization: `Bearer ${valid}` },
        "worker-1",
      );
      const logs = env.rm.replicas.map((r) => r.tail(100_000)).join("\n");
      for (const secret of [valid, other.token, submit.token, revoked.token])
        if (logs.includes(secret.split("_").slice(2).join("_")))
          problems.push("a token secret is in a replica log");
      return { workersAlive: true, expectSameVersion: true, problems };
    },
  },
];
