import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type AssignmentView, Ownership, type OwnershipActions, type Phase } from "./ownership.js";
import { SessionState } from "./session-state.js";

type Bare = Omit<AssignmentView, "leaderEpoch">;

function bare(version: number, phase: Phase, shards: readonly number[], totalShards = 4): Bare {
  return { version, phase, shards, totalShards, strategy: "sticky" };
}

describe("SessionState", () => {
  it("a Welcome starts the fence from the Hello's send time and confirms", () => {
    const s = new SessionState();
    const d = s.welcome(
      { leaderEpoch: 3, view: bare(2, "active", [1]), sessionTimeoutMs: 4000, helloSentAt: 100 },
      150,
    );
    expect(d).toEqual({ view: { ...bare(2, "active", [1]), leaderEpoch: 3 }, confirm: true });
    expect(s.leaderEpoch).toBe(3);
    expect(s.remainingMs(150)).toBe(100 + 4000 - 400 - 150);
  });

  it("a Welcome that arrives after the fence would have run out confirms nothing", () => {
    const s = new SessionState();
    const d = s.welcome({ leaderEpoch: 3, view: undefined, sessionTimeoutMs: 4000, helloSentAt: 0 }, 3600);
    expect(d.confirm).toBe(false);
  });

  it("a Welcome from an older leader epoch is rejected and does not touch the fence", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: bare(2, "active", [1]), sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    const before = s.remainingMs(1000);
    const d = s.welcome(
      { leaderEpoch: 4, view: bare(9, "active", [1]), sessionTimeoutMs: 9000, helloSentAt: 900 },
      1000,
    );
    expect(d.stale?.reason).toBe("stale_epoch");
    expect(d.view).toBeUndefined();
    expect(d.confirm).toBe(false);
    expect(s.remainingMs(1000)).toBe(before);
    expect(s.leaderEpoch).toBe(5);
  });

  it("an ack re-confirms only for a heartbeat it knows, and applies a new session timeout", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: undefined, sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    s.sent(1n, 500);
    expect(
      s.ack({ leaderEpoch: 5, view: bare(1, "active", [0]), heartbeatSeq: 9n, sessionTimeoutMs: 0 }, 510)
        .confirm,
    ).toBe(false);
    const d = s.ack(
      { leaderEpoch: 5, view: bare(1, "active", [0]), heartbeatSeq: 1n, sessionTimeoutMs: 6000 },
      510,
    );
    expect(d.confirm).toBe(true);
    expect(s.remainingMs(510)).toBe(500 + 6000 - 600 - 510);
  });

  it("an ack with a version older than one acted on in the same epoch is rejected: no view, no fence extension", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: bare(3, "active", [0]), sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    s.sent(1n, 1000);
    const d = s.ack(
      { leaderEpoch: 5, view: bare(2, "active", [0]), heartbeatSeq: 1n, sessionTimeoutMs: 0 },
      1001,
    );
    expect(d.stale?.reason).toBe("stale_version");
    expect(d.confirm).toBe(false);
    expect(s.remainingMs(1001)).toBe(4000 - 400 - 1001);
    // The heartbeat stays unacknowledged: a later, good ack of it still counts.
    expect(
      s.ack({ leaderEpoch: 5, view: bare(3, "active", [0]), heartbeatSeq: 1n, sessionTimeoutMs: 0 }, 1002)
        .confirm,
    ).toBe(true);
  });

  it("an ack from a higher epoch may carry a lower version: the new truth", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: bare(7, "active", [0]), sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    s.sent(1n, 100);
    const d = s.ack(
      { leaderEpoch: 6, view: bare(1, "pending", [0]), heartbeatSeq: 1n, sessionTimeoutMs: 0 },
      101,
    );
    expect(d.stale).toBeUndefined();
    expect(d.view).toEqual({ ...bare(1, "pending", [0]), leaderEpoch: 6 });
    expect(s.leaderEpoch).toBe(6);
  });

  it("an ack with epoch 0 counts as the stream's epoch", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: bare(3, "active", [0]), sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    expect(
      s.ack({ leaderEpoch: 0, view: bare(2, "active", [0]), heartbeatSeq: 1n, sessionTimeoutMs: 0 }, 1).stale
        ?.reason,
    ).toBe("stale_version");
  });

  it("an Assignment push is ordered like the rest", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: bare(3, "active", [0]), sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    expect(s.assignment(bare(2, "pending", [])).stale?.reason).toBe("stale_version");
    expect(s.assignment(bare(4, "pending", [])).view?.leaderEpoch).toBe(5);
  });

  it("newStream() forgets the old stream's heartbeats: a new stream's seq 1 is not the old one's", () => {
    const s = new SessionState();
    s.welcome({ leaderEpoch: 5, view: undefined, sessionTimeoutMs: 4000, helloSentAt: 0 }, 0);
    s.sent(1n, 3000);
    s.newStream();
    expect(
      s.ack({ leaderEpoch: 5, view: bare(0, "none", []), heartbeatSeq: 1n, sessionTimeoutMs: 0 }, 3001)
        .confirm,
    ).toBe(false);
    expect(s.remainingMs(3001)).toBe(4000 - 400 - 3001);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: whatever the leaders say, in whatever order, what runs is owned in the latest view
// acted on, started only under an active version within the fence, and a rejected message
// never extends the fence.

type Msg =
  | {
      readonly kind: "welcome";
      readonly dt: number;
      readonly epochDelta: number;
      readonly versionDelta: number;
      readonly phase: Phase;
      readonly mask: number;
      readonly helloLag: number;
      readonly sessionTimeoutMs: number;
      readonly newIncarnation: boolean;
    }
  | {
      readonly kind: "ack";
      readonly dt: number;
      readonly epochDelta: number;
      readonly versionDelta: number;
      readonly phase: Phase;
      readonly mask: number;
      readonly pick: number;
      readonly sessionTimeoutMs: number;
    }
  | {
      readonly kind: "assignment";
      readonly dt: number;
      readonly versionDelta: number;
      readonly phase: Phase;
      readonly mask: number;
    }
  | { readonly kind: "heartbeat"; readonly dt: number }
  | { readonly kind: "tick"; readonly dt: number }
  | { readonly kind: "stopped"; readonly dt: number; readonly pick: number }
  | { readonly kind: "newStream" };

const dt = fc.integer({ min: 0, max: 1500 });
const phase = fc.constantFrom<Phase>("active", "active", "pending", "none");
const epochDelta = fc.constantFrom(-1, 0, 0, 0, 0, 1);
const versionDelta = fc.constantFrom(-2, -1, 0, 0, 1, 1, 2);
const mask = fc.integer({ min: 0, max: 15 });

const msgArb: fc.Arbitrary<Msg> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("welcome" as const),
      dt,
      epochDelta,
      versionDelta,
      phase,
      mask,
      helloLag: fc.integer({ min: 0, max: 5000 }),
      sessionTimeoutMs: fc.constantFrom(2000, 4000, 5000),
      newIncarnation: fc.boolean(),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("ack" as const),
      dt,
      epochDelta,
      versionDelta,
      phase,
      mask,
      pick: fc.nat({ max: 9 }),
      sessionTimeoutMs: fc.constantFrom(0, 0, 0, 3000, 6000),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("assignment" as const), dt, versionDelta, phase, mask }),
  },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("heartbeat" as const), dt }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("tick" as const), dt }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("stopped" as const), dt, pick: fc.nat({ max: 7 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "newStream" as const }) },
);

function shardsOf(m: number): number[] {
  return [0, 1, 2, 3].filter((i) => m & (1 << i));
}

function runMessages(msgs: readonly Msg[]): void {
  const state = new SessionState();
  const own = new Ownership();
  const running = new Set<number>();
  const stopping = new Set<number>();
  let now = 0;
  let seq = 0n;
  const sent: bigint[] = [];
  // What the leaders say, relative to the highest (epoch, version) said so far.
  let epoch = 1;
  let version = 1;
  let lastDelivered: AssignmentView | undefined;
  // As the Session does: runners are told `confirmed`, and `fenced` once it runs out, which
  // it checks on every message from the leader and every 50 ms.
  let confirmed = false;
  const confirm = () => {
    confirmed = true;
    apply(own.confirm(now));
  };

  const apply = (a: OwnershipActions) => {
    for (const s of a.stop) {
      expect(running.has(s)).toBe(true);
      running.delete(s);
      stopping.add(s);
    }
    for (const s of a.start) {
      // Started only under an active version, within the fence, owned in the latest view.
      const v = own.latest;
      expect(v?.phase).toBe("active");
      expect(v?.shards).toContain(s);
      expect(state.valid(now), `shard ${s} started outside the fence`).toBe(true);
      expect(stopping.has(s)).toBe(false);
      running.add(s);
    }
  };
  const checkFence = () => {
    if (confirmed && !state.valid(now)) {
      confirmed = false;
      apply(own.fence(now));
    }
  };
  const deliver = (v: AssignmentView, ack: boolean) => {
    // The message may have shortened the fence (a new session timeout): check it first.
    checkFence();
    // Views reach the runner in leader order only.
    if (lastDelivered !== undefined) expect(Ownership.older(v, lastDelivered)).toBe(false);
    lastDelivered = v;
    apply(own.observe(v, now, ack));
  };
  const said = (eDelta: number, vDelta: number, newEpochVersion: number) => {
    const e = Math.max(1, epoch + eDelta);
    // A new epoch may restart the version numbers anywhere (a new leader that lost the state).
    const v = e > epoch ? newEpochVersion : Math.max(0, version + vDelta);
    return { e, v };
  };
  const record = (e: number, v: number) => {
    if (e > epoch) {
      epoch = e;
      version = v;
    } else if (e === epoch && v > version) version = v;
  };

  for (const m of msgs) {
    if (m.kind !== "newStream") now += m.dt;
    if (m.kind !== "heartbeat" && m.kind !== "newStream") checkFence();
    const before = state.remainingMs(now);
    const epochBefore = state.leaderEpoch;
    switch (m.kind) {
      case "welcome": {
        const { e, v } = said(m.epochDelta, m.versionDelta, Math.max(0, version + m.versionDelta));
        const d = state.welcome(
          {
            leaderEpoch: e,
            view: bare(v, m.phase, shardsOf(m.mask)),
            sessionTimeoutMs: m.sessionTimeoutMs,
            helloSentAt: Math.max(0, now - m.helloLag),
          },
          now,
        );
        if (d.stale !== undefined) break;
        record(e, v);
        if (m.newIncarnation) apply(own.newIncarnation(now));
        else own.newSession();
        if (d.view !== undefined) deliver(d.view, false);
        if (d.confirm) confirm();
        break;
      }
      case "ack": {
        const { e, v } = said(m.epochDelta, m.versionDelta, Math.max(0, version - 3));
        const d = state.ack(
          {
            leaderEpoch: e,
            view: bare(v, m.phase, shardsOf(m.mask)),
            heartbeatSeq: sent[m.pick % Math.max(1, sent.length)] ?? 999n,
            sessionTimeoutMs: m.sessionTimeoutMs,
          },
          now,
        );
        if (d.stale !== undefined) {
          // A rejected ack neither extends the fence nor confirms, nor reaches the runner.
          expect(d.view).toBeUndefined();
          expect(d.confirm).toBe(false);
          expect(state.remainingMs(now)).toBe(before);
          expect(state.leaderEpoch).toBe(epochBefore);
          break;
        }
        record(e, v);
        if (d.view !== undefined) deliver(d.view, true);
        if (d.confirm) confirm();
        break;
      }
      case "assignment": {
        const v = Math.max(0, version + m.versionDelta);
        const d = state.assignment(bare(v, m.phase, shardsOf(m.mask)));
        if (d.stale !== undefined) {
          expect(state.remainingMs(now)).toBe(before);
          break;
        }
        record(state.leaderEpoch, v);
        if (d.view !== undefined) deliver(d.view, false);
        break;
      }
      case "heartbeat":
        seq += 1n;
        sent.push(seq);
        state.sent(seq, now);
        break;
      case "tick":
        break;
      case "stopped": {
        const list = [...stopping].sort((a, b) => a - b);
        const s = list[m.pick % Math.max(1, list.length)];
        if (s === undefined) break;
        stopping.delete(s);
        apply(own.stopped(s, now));
        break;
      }
      case "newStream":
        state.newStream();
        sent.length = 0;
        break;
    }
    // Whatever runs is owned in the latest view acted on, in its shard count.
    const v = own.latest;
    for (const s of running) {
      expect(v?.shards).toContain(s);
      expect(own.runningTotalShards).toBe(v?.totalShards);
    }
    expect(own.running).toEqual([...running].sort((a, b) => a - b));
    // Once a tick saw the fence run out, nothing runs until a new confirmation.
    if (m.kind === "tick" && !state.valid(now)) expect(running.size).toBe(0);
  }
}

describe("SessionState + Ownership (property)", () => {
  it("never runs what the latest accepted view does not own, never outside the fence, never extends the fence on a rejected message", () => {
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 120 }), (msgs) => runMessages(msgs)),
      { numRuns: 600 },
    );
  });
});
