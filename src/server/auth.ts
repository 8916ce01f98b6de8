import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { AUTH_CONTEXT, DIGEST_SIZE } from "../protocol/constants.ts";

/**
 * Computes the AUTH mac: HMAC-SHA256(key = token, msg = "ferry-auth-v1" || nonce).
 *
 * @example
 * ```ts
 * import { authMac } from "./auth.ts";
 * const mac = authMac("s3cret", new Uint8Array(32)); // 32 bytes
 * ```
 */
export function authMac(token: string, nonce: Uint8Array): Uint8Array {
  return new Uint8Array(
    createHmac("sha256", new TextEncoder().encode(token)).update(AUTH_CONTEXT).update(nonce).digest(),
  );
}

/**
 * The server side of token auth: issues nonces, checks macs in constant time,
 * and rate-limits failures per IP address.
 *
 * @example
 * ```ts
 * import { AuthGate, authMac } from "./auth.ts";
 * const gate = new AuthGate("s3cret", 5);
 * const nonce = gate.nonce();
 * gate.check("127.0.0.1", nonce, authMac("s3cret", nonce)); // true
 * ```
 */
export class AuthGate {
  #token: string;
  #maxFailures: number;
  #failures = new Map<string, { count: number; since: number }>();

  constructor(token: string, maxFailuresPerMinute: number) {
    if (token === "") throw new RangeError("Cannot enable auth: the token is empty");
    this.#token = token;
    this.#maxFailures = maxFailuresPerMinute;
  }

  nonce(): Uint8Array {
    return new Uint8Array(randomBytes(DIGEST_SIZE));
  }

  /** True while `ip` has failed too often in the last minute. */
  limited(ip: string, now = Date.now()): boolean {
    const entry = this.#failures.get(ip);
    if (!entry) return false;
    if (now - entry.since > 60_000) {
      this.#failures.delete(ip);
      return false;
    }
    return entry.count >= this.#maxFailures;
  }

  /** Checks a mac; records a failure for `ip` when it is wrong. */
  check(ip: string, nonce: Uint8Array, mac: Uint8Array, now = Date.now()): boolean {
    const expected = authMac(this.#token, nonce);
    const ok = mac.length === expected.length && timingSafeEqual(mac, expected);
    if (!ok) {
      const entry = this.#failures.get(ip);
      if (!entry || now - entry.since > 60_000) this.#failures.set(ip, { count: 1, since: now });
      else entry.count++;
      // Bound the table: an attacker rotating addresses must not grow it without limit.
      if (this.#failures.size > 10_000) this.#failures.delete(this.#failures.keys().next().value!);
    }
    return ok;
  }
}
