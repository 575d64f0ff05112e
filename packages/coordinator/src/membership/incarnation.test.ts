import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type MemberRun, mayActivate, planHandoff } from "./handoff.js";
import { decideHello, type LiveIncarnation, supersededUntil } from "./incarnation.js";

const ST = 1000;
const live = (over: Partial<LiveIncarnation> = {}): LiveIncarnation => ({
  tokenHash: "t1",
  attached: false,
  stopped: false,
  lastAckSentAt: 100,
  priorFenceUntil: Number.NEGATIVE_INFINITY,
  ...over,
});

describe("decideHello", () => {
  it("resumes only with the live incarnation's token", () => {
    expect(
      decideHello({ live: live(), goneFenceUntil: 0, presentedHash: "t1", sessionTimeoutMs: ST }),
    ).toEqual({
      kind: "resume",
    });
    // A token the live incarnation does not have is a new process, whatever it claims.
    expect(
      decideHello({ live: live(), goneFenceUntil: 0, presentedHash: "t0", sessionTimeoutMs: ST }).kind,
    ).toBe("new");
    // An unknown stored token (a record that failed validation) matches nothing, not even "".
    expect(
      decideHello({
        live: live({ tokenHash: "" }),
        goneFenceUntil: 0,
        presentedHash: "",
        sessionTimeoutMs: ST,
      }).kind,
    ).toBe("new");
  });

  it("refuses a tokenless Hello while the live incarnation has a stream (twin Hellos, duplicates)", () => {
    expect(
      decideHello({
        live: live({ attached: true }),
        goneFenceUntil: 0,
        presentedHash: "",
        sessionTimeoutMs: ST,
      }),
    ).toEqual({ kind: "duplicate" });
    expect(
      decideHello({
        live: live({ attached: true }),
        goneFenceUntil: 0,
        presentedHash: "t1",
        sessionTimeoutMs: ST,
      }),
    ).toEqual({ kind: "resume" });
  });

  it("a new incarnation waits for the old one's fence: last ack sent + session timeout", () => {
    expect(decideHello({ live: live(), goneFenceUntil: 0, presentedHash: "", sessionTimeoutMs: ST })).toEqual(
      {
        kind: "new",
        runsAfter: 100 + ST,
      },
    );
    // Unless it stopped (planned restart): then only an even earlier one counts.
    expect(
      decideHello({
        live: live({ stopped: true, priorFenceUntil: 50 }),
        goneFenceUntil: 0,
        presentedHash: "",
        sessionTimeoutMs: ST,
      }),
    ).toEqual({ kind: "new", runsAfter: 50 });
  });

  it("a node id that is not a member waits for what the group says about its past", () => {
    expect(
      decideHello({ live: undefined, goneFenceUntil: 777, presentedHash: "x", sessionTimeoutMs: ST }),
    ).toEqual({
      kind: "new",
      runsAfter: 777,
    });
  });

  it("no incarnation may run before every earlier one that ran and did not stop has fenced itself (property)", () => {
    // A timeline of one node id: acks to the live incarnation, stops (planned restarts), and
    // new processes saying Hello. The member fields evolve as the group evolves them.
    type Ev = { k: "ack" } | { k: "stop" } | { k: "hello" } | { k: "advance"; ms: number };
    const ev: fc.Arbitrary<Ev> = fc.oneof(
      fc.constant<Ev>({ k: "ack" }),
      fc.constant<Ev>({ k: "stop" }),
      fc.constant<Ev>({ k: "hello" }),
      fc.integer({ min: 1, max: 3000 }).map((ms): Ev => ({ k: "advance", ms })),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5000 }), fc.array(ev, { maxLength: 60 }), (takeover, events) => {
        let now = takeover;
        // A loaded member: acknowledged by a previous leader before the takeover.
        let m: LiveIncarnation = live({ lastAckSentAt: takeover });
        // Every incarnation so far: until when it may run (its own fence, or -inf once stopped).
        const earlier: number[] = [];
        let current = { fenceEnd: takeover + ST, stopped: false, runsAfter: Number.NEGATIVE_INFINITY };
        for (const e of events) {
          if (e.k === "advance") now += e.ms;
          else if (e.k === "ack") {
            // The group acks only a live incarnation that may run (a waiting one gets acks too:
            // it runs nothing, but its fence grows; that is what later incarnations must outwait).
            m = { ...m, lastAckSentAt: now };
            current.fenceEnd = Math.max(current.fenceEnd, now + ST);
          } else if (e.k === "stop") {
            m = { ...m, stopped: true };
            current.stopped = true;
          } else {
            // As the group presents it: an incarnation never admitted (still waiting) ran nothing.
            const live = { ...m, stopped: m.stopped || now < m.priorFenceUntil };
            const d = decideHello({ live, goneFenceUntil: 0, presentedHash: "", sessionTimeoutMs: ST });
            expect(d.kind).toBe("new");
            if (d.kind !== "new") return;
            const ran = !current.stopped && now >= current.runsAfter;
            earlier.push(ran ? current.fenceEnd : Number.NEGATIVE_INFINITY);
            for (const end of earlier) expect(d.runsAfter).toBeGreaterThanOrEqual(end);
            current = { fenceEnd: now + ST, stopped: false, runsAfter: d.runsAfter };
            m = {
              tokenHash: "t",
              attached: false,
              stopped: false,
              lastAckSentAt: now,
              priorFenceUntil: d.runsAfter,
            };
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it("supersededUntil is the later of the prior fence and its own", () => {
    expect(supersededUntil(live({ priorFenceUntil: 5000 }), ST)).toBe(5000);
    expect(supersededUntil(live({ lastAckSentAt: 9000 }), ST)).toBe(10_000);
  });
});

describe("planHandoff", () => {
  const owners = (o: Record<string, number[]>) => ({ totalShards: 4, strategy: "sticky", owners: o });

  it("awaits running losers, outwaits the fences of those that cannot release, skips stopped ones", () => {
    const state = (n: string): MemberRun =>
      n === "run"
        ? { kind: "running" }
        : n === "stop"
          ? { kind: "stopped" }
          : n === "wait"
            ? { kind: "waiting", until: 500 }
            : { kind: "gone", until: 800 };
    const p = planHandoff({
      before: owners({ run: [0], stop: [1], wait: [2], gone: [3] }),
      next: owners({ run: [1], stop: [0], wait: [3], x: [2] }),
      unknownOwnership: false,
      members: ["run", "stop", "wait"],
      state,
      unknownGoneUntil: 0,
    });
    expect(p.awaiting).toEqual(["run"]);
    expect(p.fencesUntil).toBe(800);
  });

  it("a member keeping all its shards is no loser; a reshape makes every owner one", () => {
    const running = (): MemberRun => ({ kind: "running" });
    const same = planHandoff({
      before: owners({ a: [0, 1] }),
      next: owners({ a: [0, 1], b: [2, 3] }),
      unknownOwnership: false,
      members: ["a", "b"],
      state: running,
      unknownGoneUntil: 0,
    });
    expect(same.awaiting).toEqual([]);
    const reshaped = planHandoff({
      before: owners({ a: [0, 1] }),
      next: { totalShards: 8, strategy: "sticky", owners: { a: [0, 1] } },
      unknownOwnership: false,
      members: ["a"],
      state: running,
      unknownGoneUntil: 0,
    });
    expect(reshaped.awaiting).toEqual(["a"]);
  });

  it("with unknown ownership everyone is a loser and unnamed gone nodes are outwaited", () => {
    const p = planHandoff({
      before: undefined,
      next: owners({ a: [0, 1], b: [2, 3] }),
      unknownOwnership: true,
      members: ["a", "b"],
      state: () => ({ kind: "running" }),
      unknownGoneUntil: 4000,
    });
    expect(p.awaiting).toEqual(["a", "b"]);
    expect(p.fencesUntil).toBe(4000);
  });

  it("once it may activate, nobody but a shard's new owner can still be running it (property)", () => {
    const node = fc.constantFrom("a", "b", "c", "d", "e");
    const run: fc.Arbitrary<MemberRun> = fc.oneof(
      fc.constant<MemberRun>({ kind: "running" }),
      fc.constant<MemberRun>({ kind: "stopped" }),
      fc.integer({ min: 0, max: 10_000 }).map((until): MemberRun => ({ kind: "waiting", until })),
      fc.integer({ min: -1, max: 10_000 }).map((until): MemberRun => ({ kind: "gone", until })),
    );
    const plan = fc.dictionary(node, fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { maxLength: 4 }));
    fc.assert(
      fc.property(plan, plan, fc.dictionary(node, run), fc.boolean(), (b, n, states, unknown) => {
        const state = (id: string): MemberRun => states[id] ?? { kind: "gone", until: -1 };
        const members = Object.keys(states).filter((k) => state(k).kind !== "gone");
        // The planner only ever gives shards to members.
        const next = Object.fromEntries(Object.entries(n).filter(([k]) => members.includes(k)));
        const p = planHandoff({
          before: { totalShards: 8, strategy: "sticky", owners: b },
          next: { totalShards: 8, strategy: "sticky", owners: next },
          unknownOwnership: unknown,
          members,
          state,
          unknownGoneUntil: 0,
        });
        // Activation: every awaited member released (stopped), and time is past the fences.
        const at = Math.max(0, p.fencesUntil);
        expect(mayActivate([], p.fencesUntil, at)).toBe(true);
        const released = new Set(p.awaiting);
        for (const [holder, shards] of Object.entries(b)) {
          for (const s of shards) {
            const keeps = (next[holder] ?? []).includes(s);
            if (keeps && !unknown) continue;
            const st = state(holder);
            const stillRunning =
              (st.kind === "running" && !released.has(holder)) ||
              ((st.kind === "waiting" || st.kind === "gone") && st.until > at);
            expect(stillRunning).toBe(false);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
