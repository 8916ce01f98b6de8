import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay } from "../../src/client/backoff.ts";

describe("backoffDelay", () => {
  test("the ceiling doubles per attempt (random = 1 gives the ceiling)", () => {
    const top = (attempt: number) => backoffDelay(attempt, 250, 1_000_000, () => 1);
    assert.deepEqual([0, 1, 2, 3, 4, 5].map(top), [250, 500, 1000, 2000, 4000, 8000]);
  });

  test("random = 0 gives half the ceiling", () => {
    const low = (attempt: number) => backoffDelay(attempt, 250, 1_000_000, () => 0);
    assert.deepEqual([0, 1, 2, 3].map(low), [125, 250, 500, 1000]);
  });

  test("is capped at maxMs however many attempts", () => {
    for (const attempt of [6, 10, 30, 31, 100, 10_000]) {
      assert.equal(backoffDelay(attempt, 250, 10_000, () => 1), 10_000, `attempt ${attempt}`);
      assert.equal(backoffDelay(attempt, 250, 10_000, () => 0), 5_000, `attempt ${attempt}`);
    }
    // A huge attempt count must not overflow to Infinity or NaN.
    assert.ok(Number.isFinite(backoffDelay(Number.MAX_SAFE_INTEGER, 250, 10_000)));
  });

  test("jitter stays within [ceiling/2, ceiling] for any random value", () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(10_000, 250 * 2 ** attempt);
      const seen = new Set<number>();
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, 250, 10_000, random);
        assert.ok(
          d >= ceiling / 2 && d <= ceiling,
          `attempt ${attempt}: ${d} outside [${ceiling / 2}, ${ceiling}]`,
        );
        seen.add(d);
      }
      // Jitter actually spreads the delays (not a constant).
      assert.ok(seen.size > 20, `attempt ${attempt}: only ${seen.size} distinct delays`);
    }
  });

  test("is linear in the random value between the bounds", () => {
    assert.equal(backoffDelay(2, 100, 10_000, () => 0.5), 300); // ceiling 400: 200 + 0.5 × 200
    assert.equal(backoffDelay(2, 100, 10_000, () => 0.25), 250);
  });

  test("a cap below the base wins", () => {
    assert.equal(backoffDelay(0, 1000, 100, () => 1), 100);
    assert.equal(backoffDelay(3, 1000, 100, () => 0), 50);
  });

  test("uses Math.random by default and stays in bounds", () => {
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(1, 250, 10_000);
      assert.ok(d >= 250 && d <= 500, String(d));
    }
  });
});
