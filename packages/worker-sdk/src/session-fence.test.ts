import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SessionFence } from "./session-fence.js";

/** A fence configured with `timeoutMs` (margin = max(100, timeoutMs / 10)). */
function configured(timeoutMs: number): SessionFence {
  const f = new SessionFence();
  f.configure(timeoutMs);
  return f;
}

describe("SessionFence", () => {
  describe("margin", () => {
    it("is a tenth of the session timeout, at least 100 ms", () => {
      expect(SessionFence.marginFor(0)).toBe(100);
      expect(SessionFence.marginFor(500)).toBe(100);
      expect(SessionFence.marginFor(1000)).toBe(100);
      expect(SessionFence.marginFor(1010)).toBe(101);
      expect(SessionFence.marginFor(3000)).toBe(300);
      expect(SessionFence.marginFor(10_000)).toBe(1000);
      expect(SessionFence.marginFor(60_000)).toBe(6000);
    });

    it("rounds a fractional tenth to whole milliseconds", () => {
      expect(SessionFence.marginFor(1004)).toBe(100);
      expect(SessionFence.marginFor(1005)).toBe(101);
      expect(SessionFence.marginFor(1234)).toBe(123);
    });

    it("equals max(100, T/10) for timeouts divisible by 10 (property)", () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 1_000_000 }), (k) => {
          const t = k * 10;
          expect(SessionFence.marginFor(t)).toBe(Math.max(100, t / 10));
        }),
        { numRuns: 500 },
      );
    });

    it("configure() applies the margin to the deadline", () => {
      const f = configured(3000);
      f.sent(1n, 0);
      expect(f.acked(1n)).toBe(true);
      expect(f.remainingMs(0)).toBe(3000 - 300);
      f.configure(500); // margin 100
      expect(f.remainingMs(0)).toBe(500 - 100);
    });
  });

  describe("before a session", () => {
    it("a fresh fence is not valid, whatever the time", () => {
      const f = new SessionFence();
      for (const now of [-1e9, 0, 1, 1e9]) {
        expect(f.valid(now)).toBe(false);
        expect(f.remainingMs(now)).toBeLessThanOrEqual(0);
      }
    });

    it("configure() alone does not make it valid", () => {
      const f = configured(3000);
      for (const now of [-1e9, 0, 1, 1e9]) {
        expect(f.valid(now)).toBe(false);
        expect(f.remainingMs(now)).toBe(Number.NEGATIVE_INFINITY);
      }
    });

    it("sending without an ack does not make it valid", () => {
      const f = configured(3000);
      f.sent(1n, 0);
      f.sent(2n, 10);
      expect(f.valid(10)).toBe(false);
    });

    it("an ack without configure() is not valid (no session timeout known)", () => {
      const f = new SessionFence();
      f.sent(1n, 0);
      expect(f.acked(1n)).toBe(true);
      expect(f.valid(-1000)).toBe(false);
      f.configure(3000);
      expect(f.valid(0)).toBe(true);
    });
  });

  describe("deadline", () => {
    it("is valid until sentAt + T - margin and invalid at and after it", () => {
      const f = configured(3000); // margin 300
      f.sent(1n, 1000);
      expect(f.acked(1n)).toBe(true);
      expect(f.valid(1000)).toBe(true);
      expect(f.valid(3699)).toBe(true);
      expect(f.remainingMs(3699)).toBe(1);
      expect(f.valid(3700)).toBe(false);
      expect(f.remainingMs(3700)).toBe(0);
      expect(f.valid(3701)).toBe(false);
      expect(f.valid(1e9)).toBe(false);
    });

    it("counts from the send time, not the arrival of the ack", () => {
      const f = configured(3000);
      f.sent(1n, 1000);
      // The ack arrives very late (at 3500): the deadline is still 1000 + 3000 - 300.
      expect(f.acked(1n)).toBe(true);
      expect(f.remainingMs(3500)).toBe(200);
      expect(f.valid(3699)).toBe(true);
      expect(f.valid(3700)).toBe(false);
    });

    it("an ack arriving after the deadline leaves the fence invalid", () => {
      const f = configured(3000);
      f.sent(1n, 1000);
      expect(f.acked(1n)).toBe(true);
      expect(f.valid(5000)).toBe(false);
    });

    it("a later ack moves the deadline forward", () => {
      const f = configured(1000); // margin 100
      f.sent(1n, 0);
      f.sent(2n, 500);
      expect(f.acked(1n)).toBe(true);
      expect(f.remainingMs(0)).toBe(900);
      expect(f.acked(2n)).toBe(true);
      expect(f.remainingMs(0)).toBe(1400);
      expect(f.valid(1399)).toBe(true);
      expect(f.valid(1400)).toBe(false);
    });

    it("acking an older seq after a newer one never moves it back", () => {
      const f = configured(1000);
      f.sent(1n, 0);
      f.sent(2n, 500);
      expect(f.acked(2n)).toBe(true);
      // 1 was superseded by the ack of 2: it is unknown now and changes nothing.
      expect(f.acked(1n)).toBe(false);
      expect(f.remainingMs(0)).toBe(1400);
    });

    it("an ack of a seq sent earlier in time never moves the deadline back", () => {
      // Seqs re-sent out of time order: ack the later-sent one first.
      const f = configured(1000);
      f.sent(5n, 800);
      f.sent(3n, 100);
      expect(f.acked(5n)).toBe(true);
      expect(f.remainingMs(0)).toBe(1700);
      // 3 < 5 was dropped with the ack of 5.
      expect(f.acked(3n)).toBe(false);
      expect(f.remainingMs(0)).toBe(1700);
    });

    it("acking one seq drops every seq at or below it, keeps the newer ones", () => {
      const f = configured(1000);
      f.sent(1n, 0);
      f.sent(2n, 10);
      f.sent(3n, 20);
      f.sent(4n, 30);
      expect(f.acked(2n)).toBe(true);
      expect(f.acked(1n)).toBe(false);
      expect(f.acked(2n)).toBe(false); // an ack is consumed
      expect(f.remainingMs(0)).toBe(910);
      expect(f.acked(4n)).toBe(true);
      expect(f.acked(3n)).toBe(false);
      expect(f.remainingMs(0)).toBe(930);
    });

    it("acking an unknown seq returns false and changes nothing", () => {
      const f = configured(1000);
      expect(f.acked(1n)).toBe(false);
      expect(f.valid(0)).toBe(false);
      f.sent(1n, 100);
      expect(f.acked(7n)).toBe(false);
      expect(f.valid(100)).toBe(false);
      // The unknown ack did not drop seq 1 either.
      expect(f.acked(1n)).toBe(true);
      expect(f.remainingMs(100)).toBe(900);
      expect(f.acked(99n)).toBe(false);
      expect(f.remainingMs(100)).toBe(900);
    });

    it("remembers only the 64 most recent heartbeats", () => {
      const f = configured(1000);
      for (let i = 1; i <= 65; i++) f.sent(BigInt(i), i);
      expect(f.acked(1n)).toBe(false); // evicted
      expect(f.valid(0)).toBe(false);
      expect(f.acked(2n)).toBe(true);
      expect(f.remainingMs(0)).toBe(2 + 900);
      expect(f.acked(65n)).toBe(true);
      expect(f.remainingMs(0)).toBe(65 + 900);
    });

    it("re-sending a seq records its new send time", () => {
      const f = configured(1000);
      f.sent(1n, 0);
      f.sent(1n, 50);
      expect(f.acked(1n)).toBe(true);
      expect(f.remainingMs(0)).toBe(950);
    });

    it("works with the full range of bigint seqs", () => {
      const f = configured(1000);
      const big = 2n ** 64n - 1n;
      f.sent(big, 10);
      expect(f.acked(big)).toBe(true);
      expect(f.remainingMs(10)).toBe(900);
    });
  });

  describe("welcomed()", () => {
    it("starts a session from the hello's send time", () => {
      const f = configured(3000);
      f.welcomed(1000);
      expect(f.valid(1000)).toBe(true);
      expect(f.valid(3699)).toBe(true);
      expect(f.valid(3700)).toBe(false);
    });

    it("never moves the deadline back", () => {
      const f = configured(1000);
      f.sent(1n, 500);
      expect(f.acked(1n)).toBe(true);
      f.welcomed(100);
      expect(f.remainingMs(0)).toBe(1400);
      f.welcomed(800);
      expect(f.remainingMs(0)).toBe(1700);
    });

    it("after reset() starts a fresh session", () => {
      const f = configured(1000);
      f.sent(1n, 5000);
      expect(f.acked(1n)).toBe(true);
      f.reset();
      f.welcomed(100);
      expect(f.remainingMs(0)).toBe(1000);
    });
  });

  describe("reset()", () => {
    it("invalidates the session", () => {
      const f = configured(3000);
      f.sent(1n, 0);
      expect(f.acked(1n)).toBe(true);
      expect(f.valid(10)).toBe(true);
      f.reset();
      expect(f.valid(10)).toBe(false);
      expect(f.remainingMs(10)).toBeLessThanOrEqual(0);
    });

    it("forgets heartbeats sent before it: their late acks are unknown", () => {
      const f = configured(3000);
      f.sent(1n, 0);
      f.sent(2n, 10);
      f.reset();
      expect(f.acked(1n)).toBe(false);
      expect(f.acked(2n)).toBe(false);
      expect(f.valid(10)).toBe(false);
    });

    it("keeps the configured timeout: a new ack makes it valid again", () => {
      const f = configured(3000);
      f.sent(1n, 0);
      expect(f.acked(1n)).toBe(true);
      f.reset();
      f.sent(2n, 100);
      expect(f.acked(2n)).toBe(true);
      expect(f.remainingMs(100)).toBe(2700);
    });
  });

  describe("properties", () => {
    type Event =
      | { readonly kind: "send"; readonly seq: number; readonly at: number }
      | { readonly kind: "ack"; readonly seq: number }
      | { readonly kind: "welcome"; readonly at: number }
      | { readonly kind: "reset" };

    const event: fc.Arbitrary<Event> = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          kind: fc.constant("send" as const),
          seq: fc.integer({ min: 0, max: 80 }),
          at: fc.integer({ min: 0, max: 100_000 }),
        }),
      },
      {
        weight: 4,
        arbitrary: fc.record({ kind: fc.constant("ack" as const), seq: fc.integer({ min: 0, max: 80 }) }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant("welcome" as const),
          at: fc.integer({ min: 0, max: 100_000 }),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ kind: "reset" as const }) },
    );

    it("remainingMs(now) == lastAckedSentAt + T - margin - now, for any sends, acks, welcomes, resets", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 120_000 }),
          fc.array(event, { maxLength: 200 }),
          fc.integer({ min: -1000, max: 300_000 }),
          (timeoutMs, events, now) => {
            const f = configured(timeoutMs);
            const margin = Math.max(100, Math.round(timeoutMs / 10));
            // Model: the unacknowledged heartbeats in send order (at most 64), and the latest
            // send time among acknowledged heartbeats (or welcomes).
            let pending: { seq: number; at: number }[] = [];
            let lastAckedSentAt = Number.NEGATIVE_INFINITY;
            for (const e of events) {
              switch (e.kind) {
                case "send": {
                  const i = pending.findIndex((p) => p.seq === e.seq);
                  if (i >= 0) pending[i] = { seq: e.seq, at: e.at };
                  else pending.push({ seq: e.seq, at: e.at });
                  if (pending.length > 64) pending = pending.slice(1);
                  f.sent(BigInt(e.seq), e.at);
                  break;
                }
                case "ack": {
                  const p = pending.find((x) => x.seq === e.seq);
                  expect(f.acked(BigInt(e.seq))).toBe(p !== undefined);
                  if (p !== undefined) {
                    pending = pending.filter((x) => x.seq > e.seq);
                    lastAckedSentAt = Math.max(lastAckedSentAt, p.at);
                  }
                  break;
                }
                case "welcome":
                  f.welcomed(e.at);
                  lastAckedSentAt = Math.max(lastAckedSentAt, e.at);
                  break;
                case "reset":
                  f.reset();
                  pending = [];
                  lastAckedSentAt = Number.NEGATIVE_INFINITY;
                  break;
              }
              const expected = lastAckedSentAt + timeoutMs - margin - now;
              expect(f.remainingMs(now)).toBe(expected);
              expect(f.valid(now)).toBe(expected > 0);
            }
          },
        ),
        { numRuns: 500 },
      );
    });

    it("in realistic traffic (increasing seqs, non-decreasing times) the deadline follows the newest acked send", () => {
      const step = fc.record({
        gap: fc.integer({ min: 0, max: 2000 }),
        ackSeq: fc.option(fc.nat({ max: 10 }), { nil: undefined }),
      });
      fc.assert(
        fc.property(
          fc.integer({ min: 100, max: 30_000 }),
          fc.array(step, { maxLength: 150 }),
          (timeoutMs, steps) => {
            const f = configured(timeoutMs);
            const margin = SessionFence.marginFor(timeoutMs);
            const sentAt: number[] = [];
            let now = 0;
            let newestAcked = -1;
            for (const { gap, ackSeq } of steps) {
              now += gap;
              sentAt.push(now);
              f.sent(BigInt(sentAt.length - 1), now);
              if (ackSeq !== undefined) {
                // Ack a seq `ackSeq` behind the newest, arriving now (possibly late).
                const seq = sentAt.length - 1 - ackSeq;
                if (seq >= 0) {
                  const known = seq > newestAcked && seq >= sentAt.length - 64;
                  expect(f.acked(BigInt(seq))).toBe(known);
                  if (known) newestAcked = seq;
                }
              }
              const deadline =
                newestAcked < 0 ? Number.NEGATIVE_INFINITY : (sentAt[newestAcked] ?? 0) + timeoutMs - margin;
              // The deadline counts from the send, never from now (the ack's arrival).
              expect(f.remainingMs(now)).toBe(deadline - now);
              expect(f.valid(now)).toBe(deadline > now);
              if (newestAcked >= 0) {
                expect(f.valid(deadline - 1)).toBe(true);
                expect(f.valid(deadline)).toBe(false);
              }
            }
          },
        ),
        { numRuns: 500 },
      );
    });

    it("the deadline never moves back while the session lasts (property)", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 60_000 }),
          fc.array(event.filter((e) => e.kind !== "reset")),
          (timeoutMs, events) => {
            const f = configured(timeoutMs);
            let previous = f.remainingMs(0);
            for (const e of events) {
              if (e.kind === "send") f.sent(BigInt(e.seq), e.at);
              else if (e.kind === "ack") f.acked(BigInt(e.seq));
              else if (e.kind === "welcome") f.welcomed(e.at);
              const r = f.remainingMs(0);
              expect(r).toBeGreaterThanOrEqual(previous);
              previous = r;
            }
          },
        ),
        { numRuns: 300 },
      );
    });
  });
});
