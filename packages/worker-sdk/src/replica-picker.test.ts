import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type AttemptOutcome, ReplicaPicker } from "./replica-picker.js";

const refused = (leader?: string): AttemptOutcome => ({
  cause: "UNAVAILABLE: x",
  leader,
  unresponsive: false,
});
const silent: AttemptOutcome = { cause: "NO_ACK: x", leader: undefined, unresponsive: true };

describe("ReplicaPicker", () => {
  it("starts with the first replica and follows a named leader at once", () => {
    const p = new ReplicaPicker(["a", "b", "c"]);
    expect(p.target).toBe("a");
    expect(p.failed(refused("c"), 0)).toEqual({ target: "c", backoff: false });
  });

  it("rotates with backoff when no leader is named, never back to the replica that just failed", () => {
    const p = new ReplicaPicker(["a", "b", "c"]);
    expect(p.failed(refused(), 0)).toEqual({ target: "b", backoff: true });
    expect(p.failed(refused(), 0)).toEqual({ target: "c", backoff: true });
    expect(p.failed(refused(), 0)).toEqual({ target: "a", backoff: true });
  });

  it("follows at most 3 redirects in a row, then rotates", () => {
    const p = new ReplicaPicker(["a", "b"]);
    expect(p.failed(refused("b"), 0).target).toBe("b");
    expect(p.failed(refused("a"), 0).target).toBe("a");
    expect(p.failed(refused("b"), 0).target).toBe("b");
    expect(p.failed(refused("a"), 0)).toEqual({ target: "a", backoff: true });
    // The count starts again after a rotation.
    expect(p.failed(refused("b"), 0)).toEqual({ target: "b", backoff: false });
  });

  it("a replica that stopped answering is avoided for recheckMs: its redirects are not followed, rotation skips it", () => {
    const p = new ReplicaPicker(["a", "b", "c"], 1000);
    // Connected to a; a goes silent.
    expect(p.failed(silent, 0)).toEqual({ target: "b", backoff: true });
    expect(p.isSuspect("a")).toBe(true);
    // b still names a (its election key has not expired yet): not followed.
    expect(p.failed(refused("a"), 100)).toEqual({ target: "c", backoff: true });
    // c too; rotation skips a.
    expect(p.failed(refused("a"), 200)).toEqual({ target: "b", backoff: true });
    // b now names c, the new leader.
    expect(p.failed(refused("c"), 300)).toEqual({ target: "c", backoff: false });
  });

  it("after recheckMs the suspect is tried again (the caller checks it first), and a Welcome clears it", () => {
    const p = new ReplicaPicker(["a", "b"], 1000);
    p.failed(silent, 0);
    expect(p.avoided("a", 999)).toBe(true);
    expect(p.avoided("a", 1000)).toBe(false);
    expect(p.failed(refused("a"), 1000)).toEqual({ target: "a", backoff: false });
    expect(p.isSuspect("a")).toBe(true);
    p.welcomed();
    expect(p.isSuspect("a")).toBe(false);
  });

  it("answered() clears a suspect", () => {
    const p = new ReplicaPicker(["a", "b"], 1000);
    p.failed(silent, 0);
    p.answered("a");
    expect(p.isSuspect("a")).toBe(false);
    expect(p.failed(refused("a"), 1).target).toBe("a");
  });

  it("with one replica it keeps trying that one, even while avoided", () => {
    const p = new ReplicaPicker(["a"], 1000);
    expect(p.failed(silent, 0)).toEqual({ target: "a", backoff: true });
    expect(p.failed(refused(), 10)).toEqual({ target: "a", backoff: true });
  });

  it("when every other replica is avoided it still picks one", () => {
    const p = new ReplicaPicker(["a", "b"], 1000);
    p.suspect("b", 0);
    expect(p.failed(silent, 0).target).toMatch(/^[ab]$/);
  });

  it("names the last cause per replica, for the connect timeout's message", () => {
    const p = new ReplicaPicker(["a", "b"]);
    p.failed({ cause: "UNAVAILABLE: connect ECONNREFUSED", leader: undefined, unresponsive: false }, 0);
    p.failed({ cause: "NO_WELCOME: no Welcome within 1000 ms", leader: undefined, unresponsive: true }, 0);
    expect(p.causes()).toBe("a: UNAVAILABLE: connect ECONNREFUSED; b: NO_WELCOME: no Welcome within 1000 ms");
  });

  it("never targets a replica avoided at that moment when another is available (property)", () => {
    const outcome = fc.record({
      leader: fc.option(fc.constantFrom("a", "b", "c", "x"), { nil: undefined }),
      unresponsive: fc.boolean(),
      dt: fc.integer({ min: 0, max: 700 }),
    });
    fc.assert(
      fc.property(fc.array(outcome, { maxLength: 50 }), (outcomes) => {
        const p = new ReplicaPicker(["a", "b", "c"], 1000);
        let now = 0;
        for (const o of outcomes) {
          now += o.dt;
          const from = p.target;
          const step = p.failed({ cause: "c", leader: o.leader, unresponsive: o.unresponsive }, now);
          expect(step.target).toBe(p.target);
          if (o.unresponsive) expect(p.isSuspect(from)).toBe(true);
          const others = ["a", "b", "c"].filter((r) => r !== from && !p.avoided(r, now));
          if (others.length > 0) expect(p.avoided(step.target, now)).toBe(false);
          if (!step.backoff) expect(step.target).toBe(o.leader);
        }
      }),
      { numRuns: 300 },
    );
  });
});
