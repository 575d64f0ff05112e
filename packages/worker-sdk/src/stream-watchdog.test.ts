import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { StreamAbort } from "./stream-failure.js";
import { StreamWatchdog, type WatchdogHost } from "./stream-watchdog.js";

// Fake clock and timers; the replica's PING answer is scripted.
let now = 0;

function host(over: Partial<WatchdogHost> & { answers?: boolean } = {}) {
  const aborts: StreamAbort[] = [];
  const probes: number[] = [];
  const h: WatchdogHost = {
    target: "r1:1",
    resuming: true,
    startedAt: now,
    intervalMs: () => 500,
    probeTimeoutMs: () => 250,
    probe: async (ms) => {
      probes.push(now);
      await new Promise((r) => setTimeout(r, over.answers === false ? ms : 1));
      return over.answers !== false;
    },
    abort: (r) => aborts.push(r),
    log: () => undefined,
    ...over,
  };
  return { h, aborts, probes };
}

async function advance(ms: number): Promise<void> {
  for (let i = 0; i < ms; i += 10) {
    now += 10;
    await vi.advanceTimersByTimeAsync(10);
  }
}

describe("StreamWatchdog", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    now = 0;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("leaves a stream alone while acks keep coming", async () => {
    const { h, aborts, probes } = host();
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    for (let i = 0; i < 20; i++) {
      await advance(500);
      w.acked(now);
    }
    expect(aborts).toEqual([]);
    expect(probes).toEqual([]);
    w.close();
  });

  it("a replica that stops acking and does not answer a PING is given up after 1.25 intervals + the PING timeout", async () => {
    const { h, aborts, probes } = host({ answers: false });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    await advance(950);
    expect(probes).toEqual([650]); // the first check past 625 ms of silence
    expect(aborts.map((a) => a.code)).toEqual(["UNRESPONSIVE"]);
    expect(aborts[0]?.message).toMatch(
      /no heartbeat ack for \d+ ms, and no answer to an HTTP\/2 PING within 250 ms/,
    );
  });

  it("a silent replica that still answers PINGs is given up after 3 intervals (NO_ACK), probed once", async () => {
    const { h, aborts, probes } = host({ answers: true });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    await advance(1490);
    expect(aborts).toEqual([]);
    await advance(100);
    expect(aborts.map((a) => a.code)).toEqual(["NO_ACK"]);
    expect(probes).toHaveLength(1);
  });

  it("an ack after a PING check allows another check later", async () => {
    const { h, probes } = host({ answers: true });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    await advance(900);
    w.acked(now);
    await advance(900);
    expect(probes).toHaveLength(2);
    w.close();
  });

  it("a resume with no Welcome: PING check after half an interval, NO_WELCOME after 2 intervals", async () => {
    const answering = host({ answers: true });
    const w1 = new StreamWatchdog(answering.h, () => now);
    await advance(1050);
    expect(answering.probes).toEqual([300]);
    expect(answering.aborts.map((a) => a.code)).toEqual(["NO_WELCOME"]);
    w1.close();

    now = 0;
    const silent = host({ answers: false });
    const w2 = new StreamWatchdog(silent.h, () => now);
    await advance(600);
    expect(silent.aborts.map((a) => a.code)).toEqual(["UNRESPONSIVE"]);
    w2.close();
  });

  it("a first join (etcd writes) has no Welcome deadline, only a PING check after 1 s", async () => {
    const { h, aborts, probes } = host({ resuming: false, answers: true });
    const w = new StreamWatchdog(h, () => now);
    await advance(10_000);
    expect(probes).toEqual([1050]);
    expect(aborts).toEqual([]);
    w.close();
  });

  it("when its own checks ran late (this process paused), it does not blame the replica at once", async () => {
    const { h, aborts, probes } = host({ answers: true });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    // The process sleeps for 10 s: the clock jumps, no timer ran meanwhile.
    now += 10_000;
    await advance(50);
    expect(aborts).toEqual([]);
    expect(probes).toHaveLength(1);
    // The stream then gets one more interval to deliver an ack before NO_ACK.
    await advance(600);
    expect(aborts.map((a) => a.code)).toEqual(["NO_ACK"]);
  });

  it("a failed PING does not count when the stream answered meanwhile (a slow replica)", async () => {
    const { h, aborts, probes } = host({ answers: false });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    await advance(700); // PING sent at 650, its answer is due at 900
    w.acked(now);
    await advance(300);
    expect(probes).toEqual([650]);
    expect(aborts).toEqual([]);
    w.close();
  });

  it("close() stops every check", async () => {
    const { h, aborts, probes } = host({ answers: false });
    const w = new StreamWatchdog(h, () => now);
    w.welcomed(now);
    w.close();
    await advance(5000);
    expect(aborts).toEqual([]);
    expect(probes).toEqual([]);
  });
});
