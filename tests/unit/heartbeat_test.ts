import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Heartbeat, type HeartbeatClock, type HeartbeatOptions } from "../../src/protocol/heartbeat.ts";

/** A clock whose time only moves when the test says so; interval timers fire as time passes. */
class FakeClock implements HeartbeatClock {
  time = 1_000;
  #timers = new Map<number, { fn: () => void; ms: number; next: number }>();
  #nextHandle = 1;

  now(): number {
    return this.time;
  }
  setInterval(fn: () => void, ms: number): unknown {
    const handle = this.#nextHandle++;
    this.#timers.set(handle, { fn, ms, next: this.time + ms });
    return handle;
  }
  clearInterval(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  get activeTimers(): number {
    return this.#timers.size;
  }
  /** Moves time forward, firing every timer that comes due, in order. */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      let due: { fn: () => void; ms: number; next: number } | undefined;
      for (const t of this.#timers.values()) if (t.next <= end && (!due || t.next < due.next)) due = t;
      if (!due) break;
      this.time = due.next;
      due.next += due.ms;
      due.fn();
    }
    this.time = end;
  }
}

function setup(overrides: Partial<HeartbeatOptions> = {}) {
  const clock = new FakeClock();
  const pings: Array<{ token: bigint; at: number }> = [];
  const dead: number[] = [];
  const rtts: number[] = [];
  const state = { lastReceivedAt: clock.now() };
  const hb = new Heartbeat({
    intervalMs: 100,
    misses: 3,
    sendPing: (token) => pings.push({ token, at: clock.now() }),
    lastReceivedAt: () => state.lastReceivedAt,
    onDead: (silent) => dead.push(silent),
    onRtt: (ms) => rtts.push(ms),
    clock,
    ...overrides,
  });
  return { clock, hb, pings, dead, rtts, state };
}

describe("Heartbeat", () => {
  test("sends one PING per interval with fresh tokens", () => {
    const { clock, hb, pings, state } = setup();
    hb.start();
    for (let i = 0; i < 5; i++) {
      clock.advance(100);
      state.lastReceivedAt = clock.now(); // the peer keeps talking
    }
    assert.deepEqual(pings.map((p) => p.at), [1100, 1200, 1300, 1400, 1500]);
    assert.equal(new Set(pings.map((p) => p.token)).size, 5);
    hb.stop();
  });

  test("start() twice does not double the pings", () => {
    const { clock, hb, pings, state } = setup();
    hb.start();
    hb.start();
    clock.advance(100);
    state.lastReceivedAt = clock.now();
    clock.advance(100);
    assert.equal(pings.length, 2);
    assert.equal(clock.activeTimers, 1);
    hb.stop();
  });

  test("measures RTT from the matching PONG, once per token", () => {
    const { clock, hb, pings, rtts } = setup();
    hb.start();
    clock.advance(100);
    clock.advance(37);
    assert.equal(hb.pong(pings[0].token), 37);
    assert.equal(hb.rttMs, 37);
    assert.deepEqual(rtts, [37]);
    // The same token again, or one never sent, is ignored.
    assert.equal(hb.pong(pings[0].token), undefined);
    assert.equal(hb.pong(999n), undefined);
    assert.deepEqual(rtts, [37]);
    assert.equal(hb.rttMs, 37);
    hb.stop();
  });

  test("a PONG answering an older PING still gives that PING's RTT", () => {
    const { clock, hb, pings, state } = setup();
    hb.start();
    clock.advance(100);
    state.lastReceivedAt = clock.now();
    clock.advance(100); // second PING at 1200
    clock.advance(10);
    assert.equal(hb.pong(pings[0].token), 110);
    assert.equal(hb.pong(pings[1].token), 10);
    hb.stop();
  });

  test("declares the peer dead after misses × interval of silence, exactly once", () => {
    const { clock, hb, pings, dead } = setup();
    hb.start();
    clock.advance(299);
    assert.deepEqual(dead, []);
    assert.equal(pings.length, 2); // at 100 and 200 ms of silence
    clock.advance(1); // the tick at 300 ms of silence
    assert.deepEqual(dead, [300]);
    assert.equal(pings.length, 2, "no PING once the peer is dead");
    assert.equal(clock.activeTimers, 0, "the timer is stopped when the peer dies");
    clock.advance(10_000);
    hb.tick(); // even a manual tick cannot fire onDead again
    assert.deepEqual(dead, [300]);
  });

  test("bytes arriving without any PONG keep the peer alive", () => {
    const { clock, hb, pings, dead, rtts, state } = setup();
    hb.start();
    // A long transfer: PONGs never come back (stuck behind data), but bytes do.
    for (let t = 0; t < 50; t++) {
      clock.advance(60);
      state.lastReceivedAt = clock.now();
    }
    assert.deepEqual(dead, []);
    assert.deepEqual(rtts, []);
    assert.ok(pings.length >= 29, `expected a PING per interval, got ${pings.length}`);
    // Then silence: dead within misses intervals, counted from the last byte.
    const lastByte = clock.now();
    clock.advance(400);
    assert.equal(dead.length, 1);
    assert.ok(dead[0] >= 300 && dead[0] < 400, `silent ${dead[0]} ms`);
    assert.ok(clock.now() - lastByte >= 300);
  });

  test("PONGs alone do not count: silence is measured from lastReceivedAt", () => {
    const { clock, hb, pings, dead } = setup({ misses: 2 });
    hb.start();
    clock.advance(100);
    hb.pong(pings[0].token); // the caller did not update lastReceivedAt
    clock.advance(100);
    assert.deepEqual(dead, [200]);
  });

  test("stop() cancels pings and death; the probe map stays bounded", () => {
    const { clock, hb, pings, dead, state } = setup();
    hb.start();
    for (let i = 0; i < 20; i++) {
      clock.advance(100);
      state.lastReceivedAt = clock.now();
    }
    // Only the 8 most recent probes are remembered, so an early token is gone.
    assert.equal(hb.pong(pings[0].token), undefined);
    assert.equal(typeof hb.pong(pings[19].token), "number");
    hb.stop();
    assert.equal(clock.activeTimers, 0);
    const before = pings.length;
    clock.advance(10_000);
    assert.equal(pings.length, before);
    assert.deepEqual(dead, []);
    hb.stop(); // idempotent
  });

  test("rejects a non-positive interval or misses with RangeError", () => {
    const base = { sendPing: () => {}, lastReceivedAt: () => 0, onDead: () => {} };
    assert.throws(() => new Heartbeat({ ...base, intervalMs: 0, misses: 3 }), RangeError);
    assert.throws(() => new Heartbeat({ ...base, intervalMs: 100, misses: 0 }), RangeError);
    assert.throws(() => new Heartbeat({ ...base, intervalMs: Number.NaN, misses: 3 }), RangeError);
  });

  test("the real clock fires and stop() lets the process exit", { timeout: 5_000 }, async () => {
    // The peer talks until two PINGs went out, then falls silent. Late timers (a loaded CI
    // machine) only delay this; they cannot skip the PINGs.
    let frozenAt: number | undefined;
    let pinged = 0;
    const died = Promise.withResolvers<number>();
    const hb = new Heartbeat({
      intervalMs: 20,
      misses: 2,
      sendPing: () => {
        if (++pinged === 2) frozenAt = performance.now();
      },
      lastReceivedAt: () => frozenAt ?? performance.now(),
      onDead: (silent) => died.resolve(silent),
    });
    hb.start();
    const silent = await died.promise;
    assert.ok(silent >= 40, `silent ${silent} ms`);
    assert.ok(pinged >= 2, `pinged ${pinged}`);
    hb.stop();
  });
});
