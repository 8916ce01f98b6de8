/**
 * Exponential backoff with full jitter: a random delay in
 * `[base * 2^attempt / 2, base * 2^attempt]`, capped at `maxMs`. Jitter keeps
 * many clients that lost the same server from reconnecting in lockstep.
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./backoff.ts";
 * backoffDelay(0, 250, 10_000); // 125..250
 * backoffDelay(10, 250, 10_000); // 5000..10000
 * ```
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
